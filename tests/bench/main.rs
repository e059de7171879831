//! `sited-bench`: figures for the README, not pass/fail tests.
//!
//! 1. Edge to output: on the sim backend, with the real plugins loaded through the real plugin
//!    host, inject 20,000 edges (10,000 presses) on the entry button and time each press from
//!    the edge's timestamp to the entry door's servo pulse and the entry LED's write: backend ->
//!    device registry -> button plugin -> `pressed` -> access control -> `open`/`on` commands ->
//!    servo and led plugins -> backend (DESIGN.md §3 steps 1 to 4).
//! 2. Idle: the real `sited` with all seven plugins loaded (the demo site), left alone for
//!    `--idle-secs`: its wakeups per second (context switches from /proc) and its RSS.
//! 3. UDP: seed-001 datagrams blasted at the real `sited`'s hub on loopback, beside a bare
//!    `recv_from` loop on the same machine in the same run: the rate each reaches, what each
//!    loses, and what the hub loses when the datagrams come at the bare loop's rate.
//! 4. TCP: N devices registered at the real `sited`'s hub at once (`--devices`, default 1000
//!    and 10000): the daemon's RSS, and the round trip of `send` -> `ACK` through the control
//!    socket, as `sitectl send` makes it, with the bench playing the device.
//! 5. Flood: the real `sited` running door cycles while its UDP port is flooded from 2,000
//!    addresses: edge -> output (a simulated press through the control socket), how late each
//!    door cycle ends, `status` round trips, and whether a real sensor's cycles are answered,
//!    quiet and then flooded.
//! 6. Loaded: edge -> output through the real `sited`'s loop (edges stamped and sent over the
//!    sim wire, the siren's write reported back) while 10,000 devices are registered, a UDP
//!    stream comes at 50,000 datagrams/s and a client asks for `status` and every `devices`
//!    page in a loop.
//!
//! 7. Secure: the cost of TLS and keys (issue 12): TLS 1.3 connections with `CHAL`/`AUTH` per
//!    second and the RSS each adds at 1,000 clients, beside plain ones; `send` -> `ACK` to TLS
//!    actuators; and the hub's CPU per signed datagram against an unsigned one.
//! 8. Heartbeat: a door node's link pinging every 1 s and 5 s; the hub frozen with `SIGSTOP`:
//!    how long until the node notices, and after `SIGCONT` until the report it queued
//!    meanwhile is acknowledged.
//!
//! Run: cargo build --workspace --release --locked && target/release/sited-bench
//! (`--only edge|idle|udp|tcp|flood|loaded|secure|heartbeat` runs one part; `--udp-secs`,
//! `--devices 1000,10000`.)

use site_daemon::config;
use site_daemon::devices::{DeviceEvent, Devices};
use site_daemon::hw::Hardware;
use site_daemon::hw::sim::SimBackend;
use site_daemon::plugin_host::Libraries;
use site_daemon::site::access::{AccessConfig, AccessControl};
use site_plugin_api::Level;
use site_tests::{SITE_DEVICES, SITE_SECTIONS, SiteDir, build_dir, wait_for};
use std::time::{Duration, Instant};

const EDGES: usize = 20_000;

/// The value after `--name`, if given.
fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    let idle_secs: u64 = flag("--idle-secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let udp_secs: f64 = flag("--udp-secs")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let devices: Vec<usize> = flag("--devices")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let only = flag("--only");
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    println!(
        "sited-bench (binaries and plugins from {})",
        build_dir().display()
    );
    if run("edge") {
        edge_to_output();
    }
    if run("idle") {
        idle(idle_secs);
    }
    if run("udp") {
        hub::udp(Duration::from_secs_f64(udp_secs));
    }
    if run("tcp") {
        for n in devices {
            hub::tcp(n, 1000);
        }
    }
    if run("flood") {
        hub::flood();
    }
    if run("loaded") {
        // `--loaded DEVICES,RATE,EDGES`; the figure is 10,000 devices at 50,000/s.
        let loaded: Vec<f64> = flag("--loaded")
            .unwrap_or_else(|| "10000,50000,5000".into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        let [devices, rate, edges] = loaded[..] else {
            panic!("--loaded DEVICES,RATE,EDGES");
        };
        hub::loaded(devices as usize, rate, edges as usize);
    }
    if run("secure") {
        secure::tls(1000, 1000);
        secure::signed(300_000);
    }
    if run("heartbeat") {
        heartbeat::freeze(Duration::from_secs(1), 3);
        heartbeat::freeze(Duration::from_secs(5), 2);
    }
}

mod heartbeat;
mod hub;
mod secure;

fn edge_to_output() {
    let site = SiteDir::new();
    // The seed site, with the entry button undebounced so that every injected edge counts.
    let devices = SITE_DEVICES.replacen("pin = 5\n", "pin = 5\ndebounce-ms = 0\n", 1);
    assert_ne!(devices, SITE_DEVICES, "the entry button is on GPIO 5");
    let text = format!("{}{devices}", site_header(&site));
    let config = config::parse(&site.config_path(), &text).expect("bench config");
    let mut libs = Libraries::new();
    site_daemon::devices::check(&config, &mut libs).expect("plugins");
    let mut sim = SimBackend::new();
    let mut devices = Devices::create_all(&config, &mut libs, &mut sim);
    let mut access = AccessControl::new(AccessConfig {
        entry_button: "entry_button".into(),
        exit_button: "exit_button".into(),
        entry_door: "entry_door".into(),
        exit_door: "exit_door".into(),
        entry_led: "entry_led".into(),
        exit_led: "exit_led".into(),
        open: Duration::from_secs(5),
    });
    let mut events: Vec<DeviceEvent> = Vec::new();
    let mut edges = Vec::new();
    let (mut to_door, mut to_led) = (Vec::with_capacity(EDGES), Vec::with_capacity(EDGES));
    let carry_out =
        |fx: site_daemon::site::Effects, devices: &mut Devices, sim: &mut SimBackend| {
            for c in fx.commands {
                devices
                    .command(&c.device, c.value, sim, &mut Vec::new())
                    .expect("command");
            }
        };
    for i in 0..EDGES {
        // Each press starts an entry cycle; its two door phases are then run to the end (as
        // their timers would) before the next press, and the release in between is ignored.
        let level = if i % 2 == 0 { Level::Low } else { Level::High };
        sim.simulate(5, level).expect("simulate");
        sim.take_edges(&mut edges).expect("edges");
        for edge in edges.drain(..) {
            let at = edge.at;
            devices.on_edge(edge, &mut sim, &mut events);
            for event in events.drain(..) {
                let fx = access.on_device(&event.device, &event.event);
                carry_out(fx, &mut devices, &mut sim);
            }
            if level == Level::Low {
                to_door.push(sim.written_at(12).expect("door written").saturating_sub(at));
                to_led.push(sim.written_at(17).expect("led written").saturating_sub(at));
                for _ in 0..2 {
                    let fx = access.on_timer();
                    carry_out(fx, &mut devices, &mut sim);
                }
            }
        }
    }
    assert_eq!(to_door.len(), EDGES / 2, "every press must open the door");
    for (what, samples) in [
        ("entry_door servo pulse", &mut to_door),
        ("entry_led write", &mut to_led),
    ] {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "edge -> {what} over {} presses: p50 {:.1} us, p99 {:.1} us, max {:.1} us (target p99 < 100 us)",
            samples.len(),
            micros(pct(0.50)),
            micros(pct(0.99)),
            micros(*samples.last().expect("samples"))
        );
    }
    devices.shutdown(&mut sim);
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn site_header(site: &SiteDir) -> String {
    format!(
        "[daemon]\ncontrol-socket = \"{}\"\nplugin-dir = \"{}\"\nstate-dir = \"{}\"\n[hardware]\nbackend = \"sim\"\n",
        site.socket().display(),
        build_dir().display(),
        site.path().join("state").display()
    )
}

fn idle(secs: u64) {
    let site = SiteDir::new();
    let sections = format!("{}{SITE_SECTIONS}", site.hub_section());
    std::fs::write(
        site.config_path(),
        format!("{}{sections}{SITE_DEVICES}", site_header(&site)),
    )
    .expect("config");
    let daemon = site_tests::Daemon::start(&site);
    let pid = daemon.child.id();
    let read = || proc_status(pid);
    // Let start-up settle: wait until the switch count stops moving for a moment.
    wait_for("sited to settle", || {
        let a = read().0;
        std::thread::sleep(Duration::from_millis(200));
        (read().0 == a).then_some(())
    });
    let (before, _) = read();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (after, rss_kib) = read();
    let elapsed = t0.elapsed().as_secs_f64();
    let loaded = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| {
            let mut libs: Vec<&str> = m
                .lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .filter(|p| p.contains("libsited_plugin_"))
                .collect();
            libs.sort();
            libs.dedup();
            libs.len()
        })
        .unwrap_or(0);
    println!(
        "idle sited running the whole site (hub, 3 modules, 2 hub links), {loaded} plugins, 13 devices: {:.2} wakeups/s over {elapsed:.0} s (target <= 1/s), RSS {:.1} MiB (target < 8 MiB)",
        (after - before) as f64 / elapsed,
        rss_kib as f64 / 1024.0
    );
}

/// (context switches of every thread, VmRSS in KiB) for `pid`.
fn proc_status(pid: u32) -> (u64, u64) {
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches")
                    || line.starts_with("nonvoluntary_ctxt_switches")
                {
                    switches += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (switches, rss)
}
