//! status, sim and set against every device kind of the seed-000 site.

use site_tests::*;

fn site() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(SITE_DEVICES);
    let daemon = Daemon::start(&site);
    (site, daemon)
}

#[test]
fn status_lists_every_device_with_kind_pin_and_state() {
    let (_site, daemon) = site();
    let status = daemon.status();
    let devices = status["devices"].as_object().expect("devices object");
    assert_eq!(devices.len(), 13);
    assert_eq!(devices["entry_button"]["kind"], "button");
    assert_eq!(devices["entry_button"]["pin"], 5);
    assert_eq!(devices["entry_button"]["state"], "released");
    assert_eq!(devices["entry_door"]["state"], "closed");
    assert_eq!(devices["emergency_door"]["state"], "closed");
    assert_eq!(devices["siren"]["state"], "off");
    assert_eq!(devices["lock_switch"]["state"], "off");
    assert_eq!(status["daemon"]["backend"], "sim");
}

#[test]
fn human_status_is_a_table_naming_each_device() {
    let (_site, daemon) = site();
    let out = daemon.ctl(&["status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for name in ["entry_button", "office_fan", "siren"] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}

#[test]
fn sim_press_and_release_shows_in_status() {
    let (_site, daemon) = site();
    let out = daemon.ctl(&["sim", "entry_button", "pressed"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(daemon.state("entry_button"), "pressed");
    daemon.wait_log("entry_button: pressed");
    let out = daemon.ctl(&["sim", "entry_button", "released"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // A release inside the debounce lockout is picked up when the lockout ends.
    daemon.wait_state("entry_button", "released");
}

#[test]
fn sim_reed_and_switch_change_state() {
    let (_site, daemon) = site();
    assert!(
        daemon
            .ctl(&["sim", "emergency_door", "open"])
            .status
            .success()
    );
    assert_eq!(daemon.state("emergency_door"), "open");
    assert!(daemon.ctl(&["sim", "lock_switch", "on"]).status.success());
    assert_eq!(daemon.state("lock_switch"), "on");
}

#[test]
fn set_drives_outputs_and_the_pins() {
    let (site, daemon) = site();
    let out = daemon.ctl(&["set", "office_light", "on"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(daemon.state("office_light"), "on");
    assert_eq!(site.pins()["24"]["level"], "high");
    assert!(daemon.ctl(&["set", "office_light", "off"]).status.success());
    assert_eq!(site.pins()["24"]["level"], "low");
}

#[test]
fn set_servo_open_moves_it_to_the_open_pulse() {
    // `hold`: the servo keeps its pulse after moving, so what the pins show does not depend
    // on how fast this test reads them (without it the pulse stops `move-ms` after each move,
    // which a slow machine, or qemu, can pass before the read).
    let site = SiteDir::new();
    let held = SITE_DEVICES.replace(
        "name = \"entry_door\"\nkind = \"servo\"\npin = 12\n",
        "name = \"entry_door\"\nkind = \"servo\"\npin = 12\nhold = true\n",
    );
    assert_ne!(held, SITE_DEVICES, "the entry door's section moved");
    site.write_config(&held);
    let daemon = Daemon::start(&site);
    let closed_pulse = site.pins()["12"]["pulse_ns"]
        .as_u64()
        .expect("closed pulse");
    assert!(closed_pulse > 0, "a held servo pulses");
    assert!(daemon.ctl(&["set", "entry_door", "open"]).status.success());
    assert_eq!(daemon.state("entry_door"), "open");
    let status = daemon.status();
    assert_eq!(status["devices"]["entry_door"]["detail"]["angle"], 90.0);
    let open_pulse = site.pins()["12"]["pulse_ns"].as_u64().expect("open pulse");
    assert!(
        open_pulse > closed_pulse,
        "open {open_pulse} vs closed {closed_pulse}"
    );
}

#[test]
fn set_siren_on_sounds_it() {
    let (site, daemon) = site();
    assert!(daemon.ctl(&["set", "siren", "on"]).status.success());
    assert_eq!(daemon.state("siren"), "on");
    assert_eq!(site.pins()["22"]["level"], "high");
}

#[test]
fn sim_inside_the_debounce_lockout_prints_the_state_it_leads_to() {
    let (_site, daemon) = site();
    // Back to back, as the README's walkthrough does: the release comes inside the button's
    // 20 ms lockout (and the reed's 50 ms), and is applied when it ends.
    for (device, first, second) in [
        ("entry_button", "pressed", "released"),
        ("office_door", "open", "closed"),
    ] {
        let out = daemon.ctl(&["sim", device, first]);
        assert!(out.status.success(), "{:?}", text(&out));
        let out = daemon.ctl(&["sim", device, second]);
        assert!(out.status.success(), "{:?}", text(&out));
        assert_eq!(text(&out).0, format!("{device}: {second}\n"));
        assert_eq!(daemon.state(device), second);
    }
}

#[test]
fn the_sim_wire_takes_stamped_edges_and_reports_output_writes() {
    use std::os::unix::net::UnixDatagram;
    let site = SiteDir::new();
    let wire = site.path().join("wire.sock");
    let config = format!("{}\n[emergency]\n{SITE_DEVICES}", site.hub_section());
    let header = site.header().replace(
        "[hardware]\n",
        &format!("[hardware]\nsim-wire = \"{}\"\n", wire.display()),
    );
    std::fs::write(site.config_path(), format!("{header}{config}")).expect("config");
    let daemon = Daemon::start(&site);
    let me = UnixDatagram::bind(site.path().join("bench.sock")).expect("bind");
    me.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // The emergency door opens (its reed reads high): the siren (GPIO 22) sounds.
    let at = site_daemon::timers::monotonic_now().as_nanos();
    me.send_to(format!("16 high {at}").as_bytes(), &wire)
        .expect("send");
    let mut buf = [0u8; 128];
    let line = loop {
        let n = retry_eintr(|| me.recv(&mut buf)).expect("an output write");
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        if line.ends_with(" 22 high") {
            break line;
        }
    };
    let written: u128 = line
        .split(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("ns");
    assert!(written >= at, "written at {written}, the edge at {at}");
    assert_eq!(daemon.state("emergency_door"), "open");
    assert_eq!(daemon.state("siren"), "on");
    // Nonsense on the wire is dropped with a warning; the daemon carries on.
    me.send_to(b"sixteen up", &wire).expect("send");
    daemon.wait_log("sim: a wire datagram that is not");
    assert_eq!(daemon.state("siren"), "on");
}
