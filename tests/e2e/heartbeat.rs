//! Issue 13's heartbeats, end to end: a door node notices a frozen hub (`SIGSTOP`, its
//! sockets still open) within three heartbeats and delivers what it queued meanwhile exactly
//! once after `SIGCONT`; the hub drops a client that pinged and then froze (`PING` needing no
//! key is in `security.rs`). Heartbeats at 0.5 s, so three of them are 1.5 s (2 s and 6 s
//! under qemu-user, where a loaded emulator could otherwise miss one).

use site_tests::*;
use std::io::{BufRead, BufReader, Write};

/// `heartbeat-secs` for hub and links, and three of them as the logs say it.
const HEARTBEAT: &str = if cfg!(target_arch = "aarch64") {
    "2"
} else {
    "0.5"
};
const THREE: &str = if cfg!(target_arch = "aarch64") {
    "6"
} else {
    "1.5"
};

/// A hub on `port` that takes site events from door nodes on loopback without a key.
fn hub(site: &SiteDir, port: u16) -> Daemon {
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:{port}\"\ntls = \"127.0.0.1:0\"\nheartbeat-secs = {HEARTBEAT}\nevent-log = \"{}\"\n{ANONYMOUS_NODES}",
        site.event_log_path().display()
    ));
    Daemon::start(site)
}

#[test]
fn a_frozen_hub_is_noticed_and_the_report_queued_meanwhile_arrives_once() {
    let port = free_port();
    let hub_site = SiteDir::new();
    let hub = hub(&hub_site, port);
    let node_site = SiteDir::new();
    node_site.write_config(&format!(
        "\n[link]\nhub = \"127.0.0.1:{port}\"\nheartbeat-secs = {HEARTBEAT}\n\n[access]\nopen-secs = {DOOR_SECS}\nname = \"door-node\"\n{SITE_DEVICES}"
    ));
    let node = Daemon::start(&node_site);
    // Connected, and a heartbeat has come back.
    wait_for("a heartbeat's round trip", || {
        node.status()["site"]["access"]["link"]["rtt_ms"].as_f64()
    });
    let (shown, _) = text(&node.ctl(&["status"]));
    assert!(shown.contains(", rtt "), "{shown}");
    // Nothing lost it so far (a missed heartbeat would say so before the freeze).
    assert!(!node.log().contains("hub link lost"), "{}", node.log());
    hub.signal(libc::SIGSTOP);
    node.wait_log(&format!("access: hub link lost (no answer for {THREE} s)"));
    assert_eq!(node.status()["site"]["access"]["link"]["connected"], false);
    node.press("entry_button");
    wait_for("the report in the outbox", || {
        (node.status()["site"]["access"]["link"]["outbox"] == 1).then_some(())
    });
    hub.signal(libc::SIGCONT);
    hub.wait_staff(1);
    node.wait_outbox_empty("access");
    let lines = wait_log_lines(&hub_site, 1);
    assert_eq!(lines.len(), 1, "counted once: {lines:?}");
}

/// Registers as `pinger`, then pings every 0.2 s; says `ponged` after the first answer.
const PINGER: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rwb")
f.write(b"DEVICE pinger TYPE relay\n"); f.flush()
n = 0
while True:
    n += 1
    f.write(b"PING %d\n" % n); f.flush()
    line = f.readline()
    if line != b"PONG %d\n" % n:
        print("unexpected", line, flush=True)
        sys.exit(1)
    if n == 1:
        print("ponged", flush=True)
    time.sleep(0.2)
"#;

#[test]
fn a_client_that_pinged_and_froze_is_dropped() {
    let site = SiteDir::new();
    let hub = hub(&site, 0);
    let port = hub.hub_addr().rsplit_once(':').expect("port").1.to_string();
    let child = std::process::Command::new("python3")
        .args(["-c", PINGER, &port])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut pinger = Reap(child);
    let mut out = BufReader::new(pinger.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the pinger's first line");
    assert_eq!(line, "ponged\n");
    hub.wait_log("registered DEVICE=pinger");
    let clients = || {
        let (json, _) = text(&hub.ctl(&["devices", "--json"]));
        json.contains("\"name\":\"pinger\"")
    };
    // SAFETY: kill(2) with a pid of our own child and a signal number.
    unsafe { libc::kill(pinger.0.id() as i32, libc::SIGSTOP) };
    hub.wait_log("silent for");
    wait_for("the frozen pinger to be dropped", || {
        (!clients()).then_some(())
    });
    let log = hub.log();
    assert!(log.contains("dropped 127.0.0.1:"), "{log}");
    assert!(
        log.contains("(device pinger (relay)): silent for "),
        "{log}"
    );
    // A client that never pinged is answered too, and never watched.
    let mut plain = std::net::TcpStream::connect(hub.hub_addr()).expect("connect");
    plain.write_all(b"PING abc\n").expect("ping");
    let mut reader = BufReader::new(plain);
    line.clear();
    reader.read_line(&mut line).expect("pong");
    assert_eq!(line, "PONG abc\n");
}
