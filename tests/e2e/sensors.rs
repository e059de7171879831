//! Sensor streams on the hub's UDP port (seed 001) and JSON readings (seed 002).

use site_tests::*;
use std::net::UdpSocket;
use std::time::Duration;

fn hub() -> (SiteDir, Daemon, String) {
    let site = SiteDir::new();
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\ncycle-gap-ms = 1000\nevent-log = \"{}\"\n",
        site.event_log_path().display()
    ));
    let daemon = Daemon::start(&site);
    let udp = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp listen address")
        .to_string();
    (site, daemon, udp)
}

fn sensor(hub: &str) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(hub).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

fn send(s: &UdpSocket, seqs: &[u8]) {
    for n in seqs {
        let datagram = format!("Sensor01,2026-11-22 10:00:{n:02},temperature,2{n}.5,SEQ:{n}");
        s.send(datagram.as_bytes()).expect("send");
    }
}

fn status_reply(s: &UdpSocket) -> String {
    let mut buf = [0u8; 256];
    let n = retry_eintr(|| s.recv(&mut buf)).expect("a STATUS reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_full_cycle_gets_status_received_10_of_10() {
    let (_site, daemon, udp) = hub();
    let s = sensor(&udp);
    send(&s, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(status_reply(&s), "STATUS RECEIVED 10/10 PACKETS");
    let status = daemon.status();
    assert_eq!(status["sensors"]["Sensor01"]["temperature"]["value"], 210.5);
}

#[test]
fn a_cycle_with_gaps_lists_what_is_missing() {
    let (_site, _daemon, udp) = hub();
    let s = sensor(&udp);
    send(&s, &[1, 2, 4, 5, 6, 8, 9, 10]);
    assert_eq!(
        status_reply(&s),
        "STATUS RECEIVED 8/10 PACKETS; MISSING: [3, 7]"
    );
}

#[test]
fn a_cycle_that_goes_quiet_is_closed_after_the_gap() {
    let (_site, _daemon, udp) = hub();
    let s = sensor(&udp);
    send(&s, &[1, 2, 3, 4]);
    assert_eq!(
        status_reply(&s),
        "STATUS RECEIVED 4/10 PACKETS; MISSING: [5, 6, 7, 8, 9, 10]"
    );
}

#[test]
fn duplicates_are_counted_not_double_counted() {
    let (_site, daemon, udp) = hub();
    let s = sensor(&udp);
    send(&s, &[1, 2, 2, 3, 5, 4, 6, 7, 8, 9, 10]);
    assert_eq!(status_reply(&s), "STATUS RECEIVED 10/10 PACKETS");
    let streams = daemon.status()["hub"]["udp"]["streams"].clone();
    assert_eq!(streams[0]["stats"]["duplicates"], 1, "{streams}");
    assert_eq!(streams[0]["stats"]["out_of_order"], 1, "{streams}");
}

#[test]
fn garbage_is_counted_per_source_and_the_hub_carries_on() {
    let (_site, daemon, udp) = hub();
    let s = sensor(&udp);
    for bad in [
        &b"Sensor01,only,three"[..],
        b"\xff\xfe\xfd",
        &[b'x'; 3000],
        b"Sensor01,t,temperature,hot,SEQ:1",
    ] {
        s.send(bad).expect("send");
    }
    s.send(br#"{"type": "humidity", "device": "sensor1", "value": 55.0}"#)
        .expect("send");
    wait_for("the JSON reading", || {
        (daemon.status()["sensors"]["sensor1"]["humidity"]["value"] == 55.0).then_some(())
    });
    let from = s.local_addr().expect("addr").to_string();
    assert_eq!(daemon.status()["hub"]["udp"]["malformed"][&from], 4);
    assert!(daemon.log().contains("malformed datagram"));
    send(&s, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(status_reply(&s), "STATUS RECEIVED 10/10 PACKETS");
}

#[test]
fn sitectl_devices_lists_tcp_devices_and_udp_senders() {
    let (_site, daemon, udp) = hub();
    let tcp = daemon.hub_addr();
    let mut device = std::net::TcpStream::connect(&tcp).expect("connect");
    use std::io::Write;
    device
        .write_all(b"DEVICE Sensor01 TYPE temperature\n")
        .expect("register");
    daemon.wait_log("registered DEVICE=Sensor01 TYPE=temperature");
    let s = sensor(&udp);
    send(&s, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(status_reply(&s), "STATUS RECEIVED 10/10 PACKETS");
    let out = daemon.ctl(&["devices", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let list = list["devices"].as_array().expect("devices");
    let tcp_dev = list
        .iter()
        .find(|d| d["via"] == "tcp")
        .expect("the TCP device");
    assert_eq!(tcp_dev["name"], "Sensor01");
    assert_eq!(tcp_dev["type"], "temperature");
    let udp_dev = list
        .iter()
        .find(|d| d["via"] == "udp")
        .expect("the UDP sender");
    assert_eq!(udp_dev["stats"]["complete_cycles"], 1);
    assert_eq!(udp_dev["type"], "temperature", "what it reports");
    assert_eq!(
        udp_dev["address"],
        s.local_addr().expect("addr").to_string()
    );
    let out = daemon.ctl(&["devices"]);
    let (table, _) = text(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("packets=10"), "{table}");
}

#[test]
fn json_readings_over_tcp_lines_are_stored_like_udp_ones() {
    let (_site, daemon, _udp) = hub();
    let mut peer = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    use std::io::Write;
    peer.write_all(b"{\"type\": \"temperature\", \"device\": \"sensor1\", \"value\": 24.8}\n")
        .expect("send");
    wait_for("the TCP JSON reading", || {
        (daemon.status()["sensors"]["sensor1"]["temperature"]["value"] == 24.8).then_some(())
    });
    peer.write_all(b"{\"type\": \"temperature\"}\n")
        .expect("send");
    daemon.wait_log("bad JSON reading");
}

#[test]
fn a_late_or_repeated_packet_does_not_replace_the_latest_reading() {
    let (_site, daemon, udp) = hub();
    let s = sensor(&udp);
    // send() gives SEQ:n the value 2n.5: SEQ:3 is 23.5, SEQ:2 22.5.
    send(&s, &[1, 3]);
    wait_for("SEQ:3's value", || {
        (daemon.status()["sensors"]["Sensor01"]["temperature"]["value"] == 23.5).then_some(())
    });
    send(&s, &[2, 3, 4]);
    wait_for("SEQ:4's value", || {
        (daemon.status()["sensors"]["Sensor01"]["temperature"]["value"] == 24.5).then_some(())
    });
    let stats = daemon.status()["hub"]["udp"]["streams"][0]["stats"].clone();
    assert_eq!(stats["out_of_order"], 1, "{stats}");
    assert_eq!(stats["duplicates"], 1, "{stats}");
    // Now a stale packet last of all: once it is counted, the value must still be SEQ:5's.
    send(&s, &[2]);
    send(&s, &[5]);
    wait_for("SEQ:5's value", || {
        (daemon.status()["sensors"]["Sensor01"]["temperature"]["value"] == 25.5).then_some(())
    });
    send(&s, &[4]);
    let stats = wait_for("the repeated SEQ:4 to be counted", || {
        let stats = daemon.status()["hub"]["udp"]["streams"][0]["stats"].clone();
        (stats["duplicates"] == 3).then_some(stats)
    });
    assert_eq!(stats["packets"], 8, "{stats}");
    assert_eq!(
        daemon.status()["sensors"]["Sensor01"]["temperature"]["value"],
        25.5,
        "the late SEQ:4 (24.5) did not replace SEQ:5's value"
    );
}

#[test]
fn a_seed_002_hello_is_seen_not_malformed_and_not_answered() {
    let (_site, daemon, udp) = hub();
    let peer = sensor(&udp);
    peer.send(br#"{"type": "hello", "device": "sensor1"}"#)
        .expect("hello");
    let listed = wait_for("the peer in sitectl devices", || {
        let out = daemon.ctl(&["devices", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["devices"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == "sensor1")
            .cloned()
    });
    assert_eq!(listed["via"], "udp");
    assert_eq!(listed["type"], "hello");
    let status = daemon.status();
    assert!(
        status["hub"]["udp"]["malformed"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "{status}"
    );
    // Over TCP too: no ERR. A reading sent after it is answered by nothing either, but it is
    // stored, which shows the hello was read and passed over.
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    tcp.write_all(
        b"{\"type\": \"hello\", \"device\": \"sensor2\"}\n{\"type\": \"temperature\", \"device\": \"sensor2\", \"value\": 22.5}\n",
    )
    .expect("hello and a reading");
    wait_for("sensor2's reading", || {
        (daemon.status()["sensors"]["sensor2"]["temperature"]["value"] == 22.5).then_some(())
    });
    tcp.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    if let Ok(n) = tcp.read(&mut buf) {
        assert_eq!(
            n,
            0,
            "unexpected answer {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert!(!daemon.log().contains("malformed"), "{}", daemon.log());
}

#[test]
fn a_sensor_sending_from_new_ports_is_one_row_and_is_answered_at_the_latest() {
    let (_site, daemon, udp) = hub();
    // As the README's /dev/udp example does: every datagram from a new socket.
    for n in 1..=9u8 {
        let s = sensor(&udp);
        send(&s, &[n]);
    }
    let last = sensor(&udp);
    send(&last, &[10]);
    assert_eq!(status_reply(&last), "STATUS RECEIVED 10/10 PACKETS");
    let out = daemon.ctl(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows: Vec<&serde_json::Value> = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["name"] == "Sensor01")
        .collect();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(
        rows[0]["address"],
        last.local_addr().expect("addr").to_string()
    );
}

/// Seed 001's own UDP sensor program (`tests/seed/udp_client.py`) at 0.1 s, 1 s and 3 s
/// intervals, each with and without a lost `SEQ:10` (and one with a packet lost mid-cycle),
/// all at once against one hub with the default `cycle-gap-ms` (2 s, shorter than the slowest
/// interval). Each must get exactly one `STATUS` per cycle, for that cycle, while it waits for
/// it: the first cycle included, before the hub knows its interval, and the cycle after a loss
/// included (a second reply for one cycle would leave the client a cycle behind for good).
#[test]
fn seed_sensors_get_one_status_per_cycle_at_any_interval() {
    let site = SiteDir::new();
    site.write_config("\n[hub]\ntcp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start(&site);
    let udp = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp listen address")
        .to_string();
    let (host, port) = udp.rsplit_once(':').expect("host:port");
    let full = "STATUS RECEIVED 10/10 PACKETS";
    let lost = "STATUS RECEIVED 9/10 PACKETS; MISSING: [10]";
    // (name, interval, the CYCLE:SEQ packets lost, the replies it must print)
    let cases: [(&str, &str, &str, &[&str]); 7] = [
        ("Fast", "0.1", "", &[full, full, full]),
        ("FastLost", "0.1", "2:10", &[full, lost, full]),
        ("Steady", "1", "", &[full, full]),
        ("SteadyLost", "1", "1:10", &[lost, full]),
        (
            "SteadyMidLost",
            "1",
            "1:5",
            &["STATUS RECEIVED 9/10 PACKETS; MISSING: [5]", full],
        ),
        ("Slow", "3", "", &[full, full]),
        ("SlowLost", "3", "1:10", &[lost, full]),
    ];
    let mut clients: Vec<Reap> = cases
        .iter()
        .map(|(name, every, lose, replies)| {
            let cycles = replies.len().to_string();
            Reap::seed_program("udp_client.py", &[host, port, name, every, &cycles, lose])
        })
        .collect();
    for ((name, every, _, replies), client) in cases.iter().zip(&mut clients) {
        let (status, printed) = client.finish(Duration::from_secs(120));
        assert!(status.success(), "{name}: {printed}");
        let got: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("[{name}] ")))
            .filter(|l| l.starts_with("STATUS") || l.starts_with("No status"))
            .collect();
        assert_eq!(&got, replies, "{name}, every {every} s:\n{printed}");
    }
    // Exactly one reply per cycle: the hub closed each sender's cycles once each (a closed
    // cycle is one STATUS), and knows each one's interval.
    let out = daemon.ctl(&["devices", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for (name, every, _, replies) in cases {
        let sender = list["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}"));
        assert_eq!(sender["stats"]["cycles"], replies.len(), "{name}: {sender}");
        assert_eq!(sender["stats"]["tails"], 0, "{name}: {sender}");
        let interval = sender["interval_ms"].as_u64().expect("interval_ms");
        let every_ms = (every.parse::<f64>().expect("interval") * 1000.0) as u64;
        assert!(
            (every_ms - 50..every_ms + 500).contains(&interval),
            "{name}: interval {interval} ms, sent every {every_ms} ms"
        );
    }
}

/// Seed 001's server prints a `DATA ...` line per datagram; sited does at debug level only.
#[test]
fn each_datagram_is_logged_at_debug_level_only() {
    let (_site, quiet, udp) = hub();
    let s = sensor(&udp);
    send(&s, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(status_reply(&s), "STATUS RECEIVED 10/10 PACKETS");
    assert!(!quiet.log().contains("DATA from"), "{}", quiet.log());

    let site = SiteDir::new();
    site.write_config("\n[hub]\ntcp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n");
    let daemon = Daemon::start_with_env(&site, &[("SITED_LOG_LEVEL", "debug")]);
    let udp = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp listen address")
        .to_string();
    let s = sensor(&udp);
    send(&s, &[1]);
    let from = s.local_addr().expect("addr");
    daemon.wait_log(&format!(
        "hub udp: DATA from {from}: Sensor01,2026-11-22 10:00:01,temperature,21.5,SEQ:1"
    ));
}
