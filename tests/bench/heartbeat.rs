//! Issue 13's heartbeats against the real `sited`s: a hub and a door node whose link pings
//! every `heartbeat` (plain TCP on loopback). The hub is frozen with `SIGSTOP` (its sockets
//! stay open, as a hung process's do): how long until the node says `hub link lost`; an
//! entry is made meanwhile; then `SIGCONT`: how long until that report is acknowledged.

use site_tests::{ANONYMOUS_NODES, DOOR_SECS, Daemon, SITE_DEVICES, SiteDir, free_port, wait_for};
use std::time::{Duration, Instant};

pub fn freeze(heartbeat: Duration, rounds: usize) {
    let port = free_port();
    let hub_site = SiteDir::new();
    hub_site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:{port}\"\nevent-log = \"{}\"\n{ANONYMOUS_NODES}",
        hub_site.event_log_path().display()
    ));
    let hub = Daemon::start(&hub_site);
    let node_site = SiteDir::new();
    node_site.write_config(&format!(
        "\n[link]\nhub = \"127.0.0.1:{port}\"\nheartbeat-secs = {}\n\n[access]\nopen-secs = {DOOR_SECS}\nname = \"door-node\"\n{SITE_DEVICES}",
        heartbeat.as_secs_f64()
    ));
    let node = Daemon::start(&node_site);
    let link = |node: &Daemon| node.status()["site"]["access"]["link"].clone();
    let (mut noticed, mut delivered) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        wait_for("the link up with a heartbeat answered", || {
            let l = link(&node);
            (l["connected"] == true && l["rtt_ms"].is_number()).then_some(())
        });
        let losses = node.log().matches("hub link lost").count();
        hub.signal(libc::SIGSTOP);
        let frozen = Instant::now();
        // Longer than `wait_for`'s deadline at 5 s heartbeats: 15 s and one more.
        let deadline = frozen + heartbeat * 5;
        while node.log().matches("hub link lost").count() == losses {
            assert!(Instant::now() < deadline, "the node did not notice");
            std::thread::sleep(Duration::from_millis(5));
        }
        noticed.push(frozen.elapsed());
        node.press("entry_button");
        wait_for("the report in the outbox", || {
            (link(&node)["outbox"] == 1).then_some(())
        });
        hub.signal(libc::SIGCONT);
        let thawed = Instant::now();
        wait_for("the report acknowledged", || {
            (link(&node)["outbox"] == 0).then_some(())
        });
        delivered.push(thawed.elapsed());
        hub.wait_staff(round as u64);
    }
    // Idle: what the heartbeats cost each daemon when nothing happens.
    let idle = Duration::from_secs(20);
    let (node_before, hub_before) = (
        super::proc_status(node.child.id()).0,
        super::proc_status(hub.child.id()).0,
    );
    std::thread::sleep(idle);
    let per_sec =
        |before: u64, pid: u32| (super::proc_status(pid).0 - before) as f64 / idle.as_secs_f64();
    let node_idle = per_sec(node_before, node.child.id());
    let hub_idle = per_sec(hub_before, hub.child.id());
    let secs = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    println!(
        "heartbeat: {} s, 3 missed = {:.1} s; SIGSTOP hub -> node logs `hub link lost`, {rounds} rounds: {} s; SIGCONT -> the entry made meanwhile acknowledged: {} s (each counted once: staff {rounds}); idle wakeups over {} s: door node {node_idle:.2}/s, hub {hub_idle:.2}/s",
        heartbeat.as_secs_f64(),
        3.0 * heartbeat.as_secs_f64(),
        noticed.iter().map(secs).collect::<Vec<_>>().join(", "),
        delivered.iter().map(secs).collect::<Vec<_>>().join(", "),
        idle.as_secs()
    );
}
