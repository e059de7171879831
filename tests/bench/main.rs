//! `sited-bench`: figures for the README, not pass/fail tests.
//!
//! 1. Edge to output: on the sim backend, with the real `button` and `led` plugins loaded
//!    through the real plugin host, inject 10,000 edges and time each from the edge's
//!    timestamp to the led's pin write (backend -> device registry -> button plugin -> event ->
//!    command -> led plugin -> backend: DESIGN.md §3 steps 1, 2 and 4). Until the site logic
//!    lands, "button pressed -> led on, released -> led off" is this benchmark's stimulus.
//! 2. Idle: the real `sited` with all seven plugins loaded (the demo site), left alone for
//!    `--idle-secs`: its wakeups per second (context switches from /proc) and its RSS.
//!
//! Run: cargo build --workspace --release --locked && target/release/sited-bench

use site_daemon::config;
use site_daemon::devices::{DeviceEvent, Devices};
use site_daemon::hw::Hardware;
use site_daemon::hw::sim::SimBackend;
use site_daemon::plugin_host::Libraries;
use site_plugin_api::Level;
use site_tests::{SITE_DEVICES, SiteDir, build_dir, wait_for};
use std::time::{Duration, Instant};

const EDGES: usize = 10_000;

fn main() {
    let idle_secs: u64 = std::env::args()
        .skip_while(|a| a != "--idle-secs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!("sited-bench (plugins from {})", build_dir().display());
    edge_to_output();
    idle(idle_secs);
}

fn edge_to_output() {
    let site = SiteDir::new();
    let text = format!(
        "{}[[device]]\nname = \"entry_button\"\nkind = \"button\"\npin = 5\ndebounce-ms = 0\n\n[[device]]\nname = \"entry_led\"\nkind = \"led\"\npin = 17\n",
        site_header(&site)
    );
    let config = config::parse(&site.config_path(), &text).expect("bench config");
    let mut libs = Libraries::new();
    site_daemon::devices::check(&config, &mut libs).expect("plugins");
    let mut sim = SimBackend::new();
    let mut devices = Devices::create_all(&config, &mut libs, &mut sim);
    let mut events: Vec<DeviceEvent> = Vec::new();
    let mut edges = Vec::new();
    let mut samples = Vec::with_capacity(EDGES);
    for i in 0..EDGES {
        // Pressed pulls the pin low (pull-up, active-low); released lets it go high.
        let (level, command) = if i % 2 == 0 {
            (Level::Low, "on")
        } else {
            (Level::High, "off")
        };
        sim.simulate(5, level).expect("simulate");
        sim.take_edges(&mut edges).expect("edges");
        for edge in edges.drain(..) {
            let at = edge.at;
            devices.on_edge(edge, &mut sim, &mut events);
            for event in events.drain(..) {
                if event.device == "entry_button"
                    && (event.event == "pressed" || event.event == "released")
                {
                    devices
                        .command("entry_led", command, &mut sim, &mut Vec::new())
                        .expect("command");
                }
            }
            let written = sim.written_at(17).expect("led written");
            samples.push(written.saturating_sub(at));
        }
    }
    assert_eq!(samples.len(), EDGES, "every edge must reach the output");
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "edge -> output write over {EDGES} edges: p50 {:.1} us, p99 {:.1} us, max {:.1} us (target p99 < 100 us)",
        micros(pct(0.50)),
        micros(pct(0.99)),
        micros(*samples.last().expect("samples"))
    );
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
    std::fs::write(
        site.config_path(),
        format!("{}{SITE_DEVICES}", site_header(&site)),
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
        "idle sited, {loaded} plugins loaded, 13 devices: {:.2} wakeups/s over {elapsed:.0} s (target <= 1/s), RSS {:.1} MiB (target < 8 MiB)",
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
