//! Whoever can reach a port must not be able to exhaust it, starve the loop or flood the
//! journal (issue 8): clients that never read, idle connections, a UDP flood, bursts of lines,
//! unsolicited answers, control characters, and the operator group held as a supplementary
//! group of the process.

use site_tests::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// Writes `chunk` over and over until a write blocks for the stream's write timeout (the
/// daemon stopped reading), `within` passes, or `max_bytes` went out. Returns whether it
/// blocked, and the bytes written.
fn write_until_blocked(
    stream: &mut impl Write,
    chunk: &[u8],
    within: Duration,
    max_bytes: usize,
) -> (bool, usize) {
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < within && written < max_bytes {
        match stream.write(chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (true, written),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("writing: {e}"),
        }
    }
    (false, written)
}

fn whole_site() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    (site, daemon)
}

#[test]
fn a_control_client_that_never_reads_holds_bounded_memory_and_others_are_served() {
    let (_site, daemon) = whole_site();
    let before = rss_kib(daemon.child.id());
    let mut hog = UnixStream::connect(&daemon.socket).expect("connect");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Status requests, never read: each answer is several KiB.
    let batch = b"{\"cmd\":\"status\"}\n".repeat(1000);
    let (blocked, written) =
        write_until_blocked(&mut hog, &batch, Duration::from_secs(10), 200_000 * 17);
    let sent = written / 17;
    assert!(
        blocked,
        "sited kept taking requests ({sent}) while their answers were not read"
    );
    let after = rss_kib(daemon.child.id());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Everyone else is served meanwhile.
    assert!(daemon.ctl(&["status"]).status.success());
    daemon.press("entry_button");
    daemon.wait_staff(1);
}

#[test]
fn a_hub_client_that_never_reads_its_errors_holds_bounded_memory() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start(&site);
    let before = rss_kib(daemon.child.id());
    let mut hog = TcpStream::connect(daemon.hub_addr()).expect("connect");
    hog.write_all(b"DEVICE Hog TYPE temperature\n")
        .expect("register");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Two bytes in, a 60-byte ERR out: never read, that would grow without end.
    let junk = b"x\n".repeat(32 * 1024);
    let (blocked, _) = write_until_blocked(&mut hog, &junk, Duration::from_secs(20), usize::MAX);
    assert!(
        blocked,
        "sited kept reading while its answers were not read"
    );
    let after = rss_kib(daemon.child.id());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // The hub serves everyone else meanwhile.
    let mut other = TcpStream::connect(daemon.hub_addr()).expect("connect");
    other
        .write_all(b"DEVICE Other TYPE temperature\n")
        .expect("register");
    daemon.wait_log("registered DEVICE=Other TYPE=temperature");
}

/// A hub whose event log can never be written (/dev/full): every report's OK waits.
fn hub_with_a_full_log() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:0\"\nevent-log = \"/dev/full\"\n{ANONYMOUS_NODES}"
    ));
    let daemon = Daemon::start(&site);
    (site, daemon)
}

#[test]
fn bad_lines_behind_a_report_waiting_for_the_disk_hold_bounded_memory() {
    let (_site, daemon) = hub_with_a_full_log();
    let before = rss_kib(daemon.child.id());
    let mut hog = TcpStream::connect(daemon.hub_addr()).expect("connect");
    // Its OK waits for the disk, so the errors for what follows must wait behind it.
    hog.write_all(b"DEVICE d TYPE access-control EPOCH 0011223344556677\nEVENT 1 ENTRY\n")
        .expect("report");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let junk = b"x\n".repeat(32 * 1024);
    let (blocked, _) = write_until_blocked(&mut hog, &junk, Duration::from_secs(20), usize::MAX);
    assert!(blocked, "sited kept reading while the answers piled up");
    let after = rss_kib(daemon.child.id());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_burst_that_pauses_mid_line_is_not_cut_into_bad_lines() {
    let (_site, daemon) = hub_with_a_full_log();
    let mut door = TcpStream::connect(daemon.hub_addr()).expect("connect");
    // 400 reports in one write: the hub stops reading after 32 wait for the disk, most
    // likely in the middle of a line. That fragment is not a quiet, unterminated message.
    let mut burst = String::from("DEVICE d TYPE access-control EPOCH 0011223344556677\n");
    for n in 1..=400 {
        burst.push_str(&format!("EVENT {n} ENTRY\n"));
    }
    door.write_all(burst.as_bytes()).expect("burst");
    let counted = wait_for("the first reports to be counted", || {
        daemon.staff().filter(|n| *n > 0)
    });
    assert!(
        counted < 400,
        "the hub stopped reading while their OKs waited ({counted})"
    );
    // Well past the 100 ms after which an unterminated message counts: nothing may come
    // back (the OKs wait for the disk), least of all an ERR for half a line.
    door.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    match door.read(&mut buf) {
        Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    assert!(!daemon.log().contains("bad line"), "{}", daemon.log());
}

#[test]
fn one_users_idle_connections_cannot_lock_out_root_or_an_operator() {
    if !is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    let (_site, daemon) = whole_site();
    open_socket_to_all(&daemon.socket);
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..80 {
        let mut conn = connect_as(&daemon.socket, NOBODY, NOGROUP, &[]).expect("connect");
        // A refused connection gets its reason and is closed; a held one says nothing.
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut reply = String::new();
        match conn.read_to_string(&mut reply) {
            Ok(_) => {
                refused = Some(reply);
                break;
            }
            Err(_) => held.push(conn),
        }
    }
    let refused = refused.expect("an ordinary user's connections are limited");
    assert!(
        refused.contains("too many control connections from uid 65534"),
        "{refused}"
    );
    assert!(held.len() <= 16, "{} held", held.len());
    // Root still gets in, and so does another ordinary user.
    assert!(daemon.ctl(&["status"]).status.success());
    let mut other = connect_as(&daemon.socket, 4242, 4242, &[]).expect("connect");
    other.write_all(b"{\"cmd\":\"version\"}\n").expect("send");
    other.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut byte = [0u8; 1];
    let mut reply = Vec::new();
    while reply.last() != Some(&b'\n') {
        let n = retry_eintr(|| other.read(&mut byte)).expect("an answer");
        assert_eq!(n, 1, "answered before closing");
        reply.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&reply).contains("\"ok\":true"));
}

#[test]
fn a_half_sent_control_request_is_timed_out() {
    let (_site, daemon) = whole_site();
    let mut conn = UnixStream::connect(&daemon.socket).expect("connect");
    conn.write_all(b"{\"cmd\": \"sta").expect("half a request");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut reply = String::new();
    retry_eintr(|| conn.read_to_string(&mut reply)).expect("closed with a reason");
    assert!(
        reply.contains("request not finished within 10 s"),
        "{reply}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not before its time"
    );
}

#[test]
fn the_operator_group_counts_as_a_supplementary_group_of_the_process() {
    if !is_root() {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    if target_runner().is_some() {
        // qemu-user does not pass SO_PEERGROUPS through: sited sees no supplementary groups.
        eprintln!("skipped under an emulator: qemu-user does not support SO_PEERGROUPS");
        return;
    }
    let site = SiteDir::new();
    site.write_site_config();
    // `users` (gid 100) exists on Debian, and nobody is not listed in it.
    let config = std::fs::read_to_string(site.config_path()).expect("config");
    std::fs::write(
        site.config_path(),
        config.replacen("[daemon]\n", "[daemon]\noperator-group = \"users\"\n", 1),
    )
    .expect("config");
    let daemon = Daemon::start(&site);
    open_socket_to_all(&daemon.socket);
    let set = b"{\"cmd\":\"set\",\"device\":\"office_light\",\"value\":\"on\"}\n";
    let ask = |groups: &[u32]| {
        let mut conn = connect_as(&daemon.socket, NOBODY, NOGROUP, groups).expect("connect");
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        conn.write_all(set).expect("send");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while reply.last() != Some(&b'\n') {
            if retry_eintr(|| conn.read(&mut byte)).expect("answer") == 0 {
                break;
            }
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    let denied = ask(&[NOGROUP]);
    assert!(denied.contains("permission denied"), "{denied}");
    assert_eq!(daemon.state("office_light"), "off");
    let allowed = ask(&[NOGROUP, 100]);
    assert!(allowed.contains("\"ok\":true"), "{allowed}");
    assert_eq!(daemon.state("office_light"), "on");
}

#[test]
fn a_connection_that_never_registers_is_closed_after_10_s() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start(&site);
    let mut silent = TcpStream::connect(daemon.hub_addr()).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut reply = String::new();
    retry_eintr(|| silent.read_to_string(&mut reply)).expect("closed");
    let waited = started.elapsed();
    assert_eq!(reply, "ERR no DEVICE registration within 10 s; closing\n");
    assert!(
        waited >= Duration::from_millis(9900),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(13), "closed after {waited:?}");
}

#[test]
fn a_burst_of_lines_far_over_64_kib_is_read_in_full() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start(&site);
    let mut peer = TcpStream::connect(daemon.hub_addr()).expect("connect");
    let mut burst = String::new();
    for k in 0..1500 {
        burst.push_str(&format!(
            "{{\"type\": \"temperature\", \"device\": \"peer{k:04}\", \"value\": 21.5}}\n"
        ));
    }
    assert!(burst.len() > 64 * 1024);
    // One write, then silence: nothing more arrives to wake the hub again.
    peer.write_all(burst.as_bytes()).expect("burst");
    wait_for("all 1,500 readings", || {
        (daemon.status()["sensor_count"] == 1500).then_some(())
    });
}

#[test]
fn unsolicited_answers_cannot_flood_the_log_and_control_characters_are_escaped() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start(&site);
    let mut device = TcpStream::connect(daemon.hub_addr()).expect("connect");
    device
        .write_all(b"DEVICE Noisy TYPE temperature\nACK a\x1b[2Jb\x00c\rd\n")
        .expect("send");
    let log = daemon.wait_log("hub: Noisy answered: ACK a");
    assert!(
        log.contains("hub: Noisy answered: ACK a\\u{1b}[2Jb\\u{0}c\\u{d}d"),
        "{log}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\0'),
        "raw control characters logged"
    );
    let before = daemon.log().len();
    let line = format!("ACK {}\n", "x".repeat(900));
    let flood = line.repeat(20_000);
    device.write_all(flood.as_bytes()).expect("flood");
    device.write_all(b"DEVICE Again TYPE x\n").expect("marker");
    // The hub answers the marker (a second registration) once it has read the flood.
    device.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reply = [0u8; 64];
    let n = retry_eintr(|| device.read(&mut reply)).expect("the marker's answer");
    assert!(
        String::from_utf8_lossy(&reply[..n]).starts_with("ERR already registered"),
        "{:?}",
        String::from_utf8_lossy(&reply[..n])
    );
    let grown = daemon.log().len() - before;
    assert!(
        grown < 200 * 1024,
        "20,000 lines of 900 bytes made {grown} bytes of daemon log"
    );
}

#[test]
fn at_debug_level_a_client_cannot_flood_the_log_with_registration_lines() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start_with_env(&site, &[("SITED_LOG_LEVEL", "debug")]);
    let mut device = TcpStream::connect(daemon.hub_addr()).expect("connect");
    // Each malformed registration is logged as received (debug) and refused; 5,000 of them,
    // then one that registers and a second registration, whose refusal says the hub has read
    // them all.
    let flood = "DEVICE\n".repeat(5_000) + "DEVICE Done TYPE temperature\nDEVICE Again TYPE x\n";
    device.write_all(flood.as_bytes()).expect("flood");
    device.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut answers = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&answers).contains("ERR already registered") {
        let n = retry_eintr(|| device.read(&mut buf)).expect("answers");
        assert!(n > 0, "the hub closed the connection");
        answers.extend_from_slice(&buf[..n]);
    }
    let log = daemon.wait_log("hub: registered DEVICE=Done TYPE=temperature");
    let received = log.matches("hub: Received registration:").count();
    assert!(
        (2..=100).contains(&received),
        "{received} registration lines logged for 5,001 sent"
    );
}

#[test]
fn a_udp_flood_from_many_addresses_does_not_freeze_the_loop() {
    let site = SiteDir::new();
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\ncycle-gap-ms = 300\nevent-log = \"{}\"\n\n[access]\nopen-secs = 0.3\n{SITE_DEVICES}",
        site.event_log_path().display()
    ));
    let daemon = Daemon::start(&site);
    let udp: std::net::SocketAddr = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp address")
        .parse()
        .expect("address");
    // 2,000 flood sockets: more than a default soft limit of 1,024 descriptors.
    site_daemon::limits::raise_fd_limit().expect("raise the open-file limit");
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..2u8)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // 1,000 source addresses per thread, sending as fast as they can.
                let sockets: Vec<UdpSocket> = (0..1000u16)
                    .map(|i| {
                        let ip = std::net::Ipv4Addr::new(
                            127,
                            1 + t,
                            (i / 250) as u8,
                            (i % 250) as u8 + 1,
                        );
                        UdpSocket::bind((ip, 0)).expect("bind a flood source")
                    })
                    .collect();
                let packet = b"Flood,2026-11-30 10:00:00,temperature,20.0,SEQ:3";
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for s in &sockets {
                        let _ = s.send_to(packet, udp);
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    // Under the flood: a door cycle ends, status answers within its timeout, and a real
    // sensor's cycle is answered.
    let status_ok = |daemon: &Daemon| {
        let out = daemon.ctl(&["--timeout", "2", "status", "--json"]);
        assert!(
            out.status.success(),
            "status under the flood: {:?}",
            text(&out)
        );
    };
    status_ok(&daemon);
    daemon.press("entry_button");
    daemon.wait_staff(1);
    status_ok(&daemon);
    // A real sensor keeps sending its cycles, a datagram every 10 ms, until a STATUS comes.
    // The flood is faster than sited can take in, so the kernel drops a share of everyone's
    // datagrams at the full socket, the sensor's too: what is tested is that the cycles that
    // get through are answered.
    let sensor = UdpSocket::bind("127.0.0.1:0").expect("sensor");
    sensor
        .set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let mut answered = None;
    let started = Instant::now();
    let mut k = 0u32;
    // Under qemu-user, with the rest of the suite running beside it, the emulated hub takes
    // in so little of the flood that a whole cycle getting through can take longer.
    let deadline = if cfg!(target_arch = "aarch64") {
        DEADLINE * 4
    } else {
        DEADLINE
    };
    while answered.is_none() && started.elapsed() < deadline {
        let n = k % 10 + 1;
        let packet = format!("Real01,2026-11-30 10:00:0{n},temperature,21.5,SEQ:{n}");
        sensor.send_to(packet.as_bytes(), udp).expect("send");
        k += 1;
        let mut buf = [0u8; 128];
        if let Ok((got, _)) = sensor.recv_from(&mut buf) {
            answered = Some(String::from_utf8_lossy(&buf[..got]).into_owned());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = flooders
        .into_iter()
        .map(|f| f.join().expect("flooder"))
        .sum();
    let answered = answered.expect("the real sensor's cycle was answered under the flood");
    assert!(answered.starts_with("STATUS RECEIVED"), "{answered}");
    assert!(sent > 10_000, "the flood ran ({sent} datagrams)");
    status_ok(&daemon);
}
