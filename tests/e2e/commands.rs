//! Operator commands to TCP devices (seed 001): `sitectl send` writes the command, waits for the
//! device's answer and prints it. The devices here behave exactly as the seed's client does: one
//! `send()` per message, no newline, each command read with one `recv()`.

use site_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;

fn hub() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(&site.hub_section());
    let daemon = Daemon::start(&site);
    (site, daemon)
}

/// Connects and registers as the seed client does; waits until the hub has it.
fn seed_device(daemon: &Daemon, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(daemon.hub_addr()).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(format!("DEVICE {name} TYPE temperature").as_bytes())
        .expect("register");
    daemon.wait_log(&format!("registered DEVICE={name} TYPE=temperature"));
    s
}

/// Reads one command the way the seed client does (one recv) and returns it.
fn receive(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 1024];
    let n = retry_eintr(|| s.read(&mut buf)).expect("a command");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Runs `sitectl send` in a thread so the test can play the device meanwhile.
fn send_async(daemon: &Daemon, args: &[&str]) -> std::thread::JoinHandle<std::process::Output> {
    let socket = daemon.socket.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_as_root(&socket, &refs)
    })
}

#[test]
fn a_seed_device_gets_commands_and_its_acks_are_printed_then_quit_closes_it() {
    let (_site, daemon) = hub();
    let mut device = seed_device(&daemon, "Sensor01");
    for command in ["SET_INTERVAL 3", "ACTIVATE_ALARM"] {
        let words: Vec<&str> = command.split(' ').collect();
        let mut args = vec!["send", "Sensor01"];
        args.extend(words);
        let pending = send_async(&daemon, &args);
        // As seed 001's server sends it: the bare text, no newline (the device sent none).
        assert_eq!(receive(&mut device), command);
        device.write_all(b"ACK Command Executed").expect("ack");
        let out = pending.join().expect("sitectl");
        assert!(out.status.success(), "{:?}", text(&out));
        assert_eq!(text(&out).0, "ACK Command Executed\n");
    }
    let log = daemon.wait_log("Sensor01 answered \"ACTIVATE_ALARM\": ACK Command Executed");
    assert!(
        log.contains("hub: sent command to Sensor01: SET_INTERVAL 3"),
        "{log}"
    );
    assert!(
        log.contains("Sensor01 answered \"SET_INTERVAL 3\": ACK Command Executed"),
        "{log}"
    );
    let out = daemon.ctl(&["send", "Sensor01", "quit"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let mut rest = Vec::new();
    assert_eq!(
        device.read_to_end(&mut rest).expect("closed"),
        0,
        "the hub closed the connection"
    );
}

/// Seed 001's own device program, unchanged (`tests/seed/tcp_client.py`), against the hub:
/// it must understand every command, byte for byte, and see `quit` close its connection.
#[test]
fn the_seed_device_program_itself_understands_every_command() {
    let (_site, daemon) = hub();
    let hub = daemon.hub_addr();
    let (host, port) = hub.rsplit_once(':').expect("host:port");
    let mut device = Reap::seed_program("tcp_client.py", &[host, port]);
    daemon.wait_log("registered DEVICE=Sensor01 TYPE=temperature");
    for command in [&["SET_INTERVAL", "3"][..], &["ACTIVATE_ALARM"]] {
        let mut args = vec!["send", "Sensor01"];
        args.extend(command);
        let out = daemon.ctl(&args);
        assert!(out.status.success(), "{:?}", text(&out));
        assert_eq!(text(&out).0, "ACK Command Executed\n");
    }
    assert!(daemon.ctl(&["send", "Sensor01", "quit"]).status.success());
    let (status, printed) = device.finish(DEADLINE);
    assert!(status.success(), "{printed}");
    for line in [
        "[Sensor01] Received command: SET_INTERVAL 3\n",
        "[Sensor01] Changing reporting interval to 3 seconds (simulated).\n",
        "[Sensor01] Alarm activated (simulated).\n",
        "[Sensor01] Server closed connection.\n",
    ] {
        assert!(printed.contains(line), "{line:?} missing from:\n{printed}");
    }
    assert!(!printed.contains("Unknown command"), "{printed}");
}

#[test]
fn a_command_right_after_a_seed_registration_waits_for_it() {
    let (_site, daemon) = hub();
    let mut device = TcpStream::connect(daemon.hub_addr()).expect("connect");
    device.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // No newline: the registration counts once the device has been quiet for 100 ms, and the
    // operator's command comes before that.
    device
        .write_all(b"DEVICE Quick01 TYPE temperature")
        .expect("register");
    let pending = send_async(&daemon, &["send", "Quick01", "PING"]);
    assert_eq!(receive(&mut device), "PING");
    device.write_all(b"ACK pong").expect("ack");
    let out = pending.join().expect("send");
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "ACK pong\n");
}

#[test]
fn a_device_that_registers_with_a_newline_gets_newline_terminated_commands() {
    let (_site, daemon) = hub();
    let mut device = TcpStream::connect(daemon.hub_addr()).expect("connect");
    device.set_read_timeout(Some(DEADLINE)).expect("timeout");
    device
        .write_all(b"DEVICE Lined01 TYPE temperature\n")
        .expect("register");
    daemon.wait_log("registered DEVICE=Lined01 TYPE=temperature");
    let pending = send_async(&daemon, &["send", "Lined01", "SET_INTERVAL", "3"]);
    assert_eq!(receive(&mut device), "SET_INTERVAL 3\n");
    device.write_all(b"ACK ok\n").expect("ack");
    assert_eq!(text(&pending.join().expect("send")).0, "ACK ok\n");
}

#[test]
fn commands_to_one_device_wait_for_the_answer_before() {
    let (_site, daemon) = hub();
    let mut device = seed_device(&daemon, "Sensor01");
    let first = send_async(&daemon, &["send", "Sensor01", "ONE"]);
    assert_eq!(receive(&mut device), "ONE");
    let second = send_async(&daemon, &["send", "Sensor01", "TWO"]);
    daemon.wait_log("control: uid 0 sends Sensor01 \"TWO\"");
    device.write_all(b"ACK one").expect("ack");
    assert_eq!(
        receive(&mut device),
        "TWO",
        "the second goes out only after the first's answer"
    );
    device.write_all(b"ACK two").expect("ack");
    assert_eq!(text(&first.join().expect("first")).0, "ACK one\n");
    assert_eq!(text(&second.join().expect("second")).0, "ACK two\n");
}

#[test]
fn several_devices_are_addressed_by_name() {
    let (_site, daemon) = hub();
    let mut a = seed_device(&daemon, "SensorA");
    let mut b = seed_device(&daemon, "SensorB");
    let to_b = send_async(&daemon, &["send", "SensorB", "PING"]);
    assert_eq!(receive(&mut b), "PING");
    b.write_all(b"ACK from B").expect("ack");
    assert_eq!(text(&to_b.join().expect("b")).0, "ACK from B\n");
    let to_a = send_async(&daemon, &["send", "SensorA", "PING"]);
    assert_eq!(receive(&mut a), "PING");
    a.write_all(b"ACK from A").expect("ack");
    assert_eq!(text(&to_a.join().expect("a")).0, "ACK from A\n");
}

#[test]
fn a_slow_device_times_out_with_exit_1_and_its_late_answer_is_ignored() {
    let (_site, daemon) = hub();
    let mut device = seed_device(&daemon, "Slow01");
    let pending = send_async(
        &daemon,
        &["--timeout", "0.3", "send", "Slow01", "SET_INTERVAL", "3"],
    );
    assert_eq!(receive(&mut device), "SET_INTERVAL 3");
    let out = pending.join().expect("sitectl");
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("Slow01 did not answer within 0.3 s"),
        "{:?}",
        text(&out)
    );
    device.write_all(b"ACK late\n").expect("late ack");
    daemon.wait_log("answered after its command timed out; ignored: ACK late");
    let next = send_async(&daemon, &["send", "Slow01", "NEXT"]);
    assert_eq!(receive(&mut device), "NEXT");
    device.write_all(b"ACK next\n").expect("ack");
    assert_eq!(text(&next.join().expect("next")).0, "ACK next\n");
}

#[test]
fn a_device_that_disconnects_mid_command_fails_the_command() {
    let (_site, daemon) = hub();
    let mut device = seed_device(&daemon, "Gone01");
    let pending = send_async(&daemon, &["send", "Gone01", "ACTIVATE_ALARM"]);
    assert_eq!(receive(&mut device), "ACTIVATE_ALARM");
    drop(device);
    let out = pending.join().expect("sitectl");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("Gone01 disconnected before answering"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn unknown_or_disconnected_devices_are_refused() {
    let (_site, daemon) = hub();
    let out = daemon.ctl(&["send", "Nobody", "PING"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("no device named \"Nobody\" is connected"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn a_second_registration_of_a_name_replaces_the_first() {
    let (_site, daemon) = hub();
    let mut old = seed_device(&daemon, "Twin01");
    let mut new = TcpStream::connect(daemon.hub_addr()).expect("connect");
    new.set_read_timeout(Some(DEADLINE)).expect("timeout");
    new.write_all(b"DEVICE Twin01 TYPE temperature\n")
        .expect("register");
    daemon.wait_log("Twin01 registered again; the new connection replaces the old one");
    let mut rest = Vec::new();
    assert_eq!(old.read_to_end(&mut rest).expect("closed"), 0);
    let pending = send_async(&daemon, &["send", "Twin01", "PING"]);
    assert_eq!(receive(&mut new), "PING\n");
    new.write_all(b"ACK new\n").expect("ack");
    assert_eq!(text(&pending.join().expect("send")).0, "ACK new\n");
}

/// The 10,000-device benchmark (`sited-bench --only tcp`) at a size CI can afford: enough
/// devices that `status` and `devices` run past the 64 KiB a request may have.
const MANY: usize = 600;

#[test]
fn many_devices_at_once_are_all_listed_and_each_reachable() {
    // All e2e tests share this process's descriptors.
    site_daemon::limits::raise_fd_limit().expect("raise the open-file limit");
    // They all come from 127.0.0.1, as a benchmark's do.
    let site = SiteDir::new();
    site.write_config(&format!(
        "{}max-clients-per-address = {}\n",
        site.hub_section(),
        MANY + 10
    ));
    let daemon = Daemon::start(&site);
    let hub_addr = daemon.hub_addr();
    let mut devices: Vec<TcpStream> = (0..MANY)
        .map(|k| {
            let mut s = TcpStream::connect(&hub_addr).expect("connect");
            s.set_read_timeout(Some(DEADLINE)).expect("timeout");
            s.write_all(format!("DEVICE dev{k} TYPE temperature\n").as_bytes())
                .expect("register");
            s
        })
        .collect();
    let listed = wait_for(&format!("{MANY} devices listed"), || {
        let out = daemon.ctl(&["devices", "--json"]);
        assert!(out.status.success(), "{:?}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let list = v["devices"].as_array().cloned().unwrap_or_default();
        (list.len() == MANY).then_some(list)
    });
    assert!(
        listed
            .iter()
            .all(|d| d["type"] == "temperature" && d["via"] == "tcp")
    );
    // Status carries a summary: the count and the first few (issue 11: no request may hold
    // the loop for a whole list); `devices` has them all, above.
    let out = daemon.ctl(&["status", "--json"]);
    assert!(
        out.stdout.len() < 16 * 1024,
        "a summary, not every client: {} bytes",
        out.stdout.len()
    );
    let status = daemon.status();
    assert_eq!(status["hub"]["client_count"], MANY);
    assert_eq!(
        status["hub"]["clients"].as_array().map(Vec::len),
        Some(site_proto::STATUS_LIST)
    );
    let (shown, _) = text(&daemon.ctl(&["status"]));
    assert!(
        shown.contains(&format!(
            "... and {} more (sitectl devices lists them all)",
            MANY - 10
        )),
        "{shown}"
    );
    for k in [0, MANY / 2, MANY - 1] {
        let name = format!("dev{k}");
        let pending = send_async(&daemon, &["send", &name, "SET_INTERVAL", "3"]);
        assert_eq!(receive(&mut devices[k]), "SET_INTERVAL 3\n");
        devices[k]
            .write_all(format!("ACK from {name}").as_bytes())
            .expect("ack");
        let out = pending.join().expect("sitectl");
        assert_eq!(text(&out).0, format!("ACK from {name}\n"));
    }
}

#[test]
fn connections_beyond_max_clients_are_turned_away_until_one_leaves() {
    let site = SiteDir::new();
    site.write_config(&format!("{}max-clients = 2\n", site.hub_section()));
    let daemon = Daemon::start(&site);
    let first = seed_device(&daemon, "One");
    let _second = seed_device(&daemon, "Two");
    let mut third = TcpStream::connect(daemon.hub_addr()).expect("connect");
    third.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut answer = String::new();
    retry_eintr(|| third.read_to_string(&mut answer)).expect("turned away");
    assert_eq!(answer, "ERR too many clients\n");
    daemon.wait_log("turned away");
    drop(first);
    daemon.wait_log("device One (temperature) disconnected");
    let _again = seed_device(&daemon, "Three");
}

#[test]
fn one_address_cannot_take_every_slot() {
    let site = SiteDir::new();
    site.write_config(&format!(
        "{}max-clients-per-address = 2\n",
        site.hub_section()
    ));
    let daemon = Daemon::start(&site);
    let first = seed_device(&daemon, "One");
    let _second = seed_device(&daemon, "Two");
    let mut third = TcpStream::connect(daemon.hub_addr()).expect("connect");
    third.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut answer = String::new();
    retry_eintr(|| third.read_to_string(&mut answer)).expect("turned away");
    assert_eq!(answer, "ERR too many clients from 127.0.0.1\n");
    daemon.wait_log("(max-clients-per-address)");
    // Another address still gets in (all of 127.0.0.0/8 is loopback).
    let hub: std::net::SocketAddr = daemon.hub_addr().parse().expect("hub address");
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), hub);
    other
        .write_all(b"DEVICE Other TYPE temperature\n")
        .expect("register");
    daemon.wait_log("registered DEVICE=Other TYPE=temperature from 127.0.0.2");
    drop(first);
    daemon.wait_log("device One (temperature) disconnected");
    let _again = seed_device(&daemon, "Three");
}

/// The daemon's side of a connection in /proc/net/tcp: its timer field (`tr:when`).
fn server_side_timer(hub_port: u16, peer_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |f: &str| u16::from_str_radix(f.rsplit(':').next()?, 16).ok();
        (port(fields.get(1)?) == Some(hub_port) && port(fields.get(2)?) == Some(peer_port))
            .then(|| fields.get(5).map(|t| t.to_string()))
            .flatten()
    })
}

#[test]
fn registered_devices_are_watched_by_tcp_keepalive_not_an_idle_timeout() {
    let (_site, daemon) = hub();
    let device = seed_device(&daemon, "Quiet01");
    let hub_port = device.peer_addr().expect("peer").port();
    let peer_port = device.local_addr().expect("local").port();
    // Timer kind 2 is the keepalive timer (0: none); the kernel arms it for an idle socket
    // with SO_KEEPALIVE, counting down from the hub's 60 s.
    let timer = wait_for("the hub's side of the connection", || {
        server_side_timer(hub_port, peer_port)
    });
    let (kind, when) = timer.split_once(':').expect("tr:when");
    assert_eq!(kind, "02", "keepalive timer armed: {timer}");
    let ticks = u64::from_str_radix(when, 16).expect("hex");
    assert!(ticks > 0, "{timer}");
}

/// `[hub] device-log`: seed 001's server record, in the seed server's words, for the seed's
/// own device program; reopened on SIGHUP like the event log. At debug level the raw
/// registration line is logged too.
#[test]
fn the_device_log_keeps_the_seed_servers_record() {
    let site = SiteDir::new();
    let device_log = site.path().join("devices.log");
    site.write_config(&format!(
        "{}device-log = \"{}\"\n",
        site.hub_section(),
        device_log.display()
    ));
    let daemon = Daemon::start_with_env(&site, &[("SITED_LOG_LEVEL", "debug")]);
    let hub = daemon.hub_addr();
    let (host, port) = hub.rsplit_once(':').expect("host:port");
    let mut device = Reap::seed_program("tcp_client.py", &[host, port]);
    daemon.wait_log("registered DEVICE=Sensor01 TYPE=temperature");
    for command in ["SET_INTERVAL 3", "ACTIVATE_ALARM", "quit"] {
        let mut args = vec!["send", "Sensor01"];
        args.extend(command.split(' '));
        let out = daemon.ctl(&args);
        assert!(out.status.success(), "{:?}", text(&out));
    }
    assert!(device.finish(DEADLINE).0.success());
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    // (the date and time, the words)
    let entries = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .map(|l| {
                let (date, words) = l.split_at(l.len().min(20));
                (date.to_string(), words.to_string())
            })
            .collect()
    };
    let closed = wait_for("the disconnection in the device log", || {
        entries(&read(&device_log))
            .into_iter()
            .find(|(_, w)| w.starts_with("Connection to 127.0.0.1:") && w.ends_with(" closed."))
    });
    let got = entries(&read(&device_log));
    let words: Vec<&str> = got.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        words,
        [
            "Registered DEVICE=Sensor01 TYPE=temperature",
            "Sent command to Sensor01: SET_INTERVAL 3",
            "Received ACK from Sensor01: ACK Command Executed",
            "Sent command to Sensor01: ACTIVATE_ALARM",
            "Received ACK from Sensor01: ACK Command Executed",
            "Closing connection with Sensor01",
            closed.1.as_str(),
        ]
    );
    for (date, _) in &got {
        assert!(
            date.len() == 20
                && date.ends_with(' ')
                && date.chars().filter(char::is_ascii_digit).count() == 14,
            "a timestamp, YYYY-MM-DD HH:MM:SS: {date:?}"
        );
    }
    assert!(
        daemon
            .log()
            .contains("Received registration: DEVICE Sensor01 TYPE temperature"),
        "the raw registration at debug level"
    );

    // logrotate moves the file and sends SIGHUP: new lines go to a new file.
    let rotated = site.path().join("devices.log.1");
    std::fs::rename(&device_log, &rotated).expect("rotate");
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reloaded");
    let mut lamp = TcpStream::connect(&hub).expect("connect");
    lamp.write_all(b"DEVICE Lamp TYPE relay\n")
        .expect("register");
    daemon.wait_log("registered DEVICE=Lamp TYPE=relay");
    let lamp_addr = lamp.local_addr().expect("addr");
    drop(lamp);
    let fresh = wait_for("the lamp's disconnection in the new device log", || {
        let text = read(&device_log);
        text.contains(&format!("Connection to {lamp_addr} closed."))
            .then_some(text)
    });
    let words: Vec<String> = entries(&fresh).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        words,
        [
            "Registered DEVICE=Lamp TYPE=relay".to_string(),
            format!("Connection to {lamp_addr} closed.")
        ]
    );
    assert!(
        !read(&rotated).contains("Lamp"),
        "the old file is left alone"
    );
}
