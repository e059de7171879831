//! Start, reload (SIGHUP and `sitectl reload`) and stop (SIGTERM, SIGINT).

use site_tests::*;

const LED_AND_BUTTON: &str = r#"
[[device]]
name = "entry_led"
kind = "led"
pin = 17

[[device]]
name = "entry_button"
kind = "button"
pin = 5
"#;

#[test]
fn sighup_with_a_good_config_applies_it() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["set", "entry_led", "on"]).status.success());
    site.write_config(&format!(
        "{LED_AND_BUTTON}\n[[device]]\nname = \"office_fan\"\nkind = \"relay\"\npin = 25\n"
    ));
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reloaded");
    let status = daemon.status();
    assert_eq!(status["devices"]["office_fan"]["state"], "off");
    // An unchanged device keeps its instance and its state across the reload.
    assert_eq!(status["devices"]["entry_led"]["state"], "on");
}

#[test]
fn sighup_with_a_bad_config_keeps_the_old_one_and_says_why() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let daemon = Daemon::start(&site);
    std::fs::write(
        site.config_path(),
        format!("{}{LED_AND_BUTTON}\ncolour = \"red\"\n", site.header()),
    )
    .expect("write bad config");
    daemon.signal(libc::SIGHUP);
    let log = daemon.wait_log("reload failed, keeping the running config");
    assert!(
        log.contains("colour"),
        "the reason should name the key:\n{log}"
    );
    assert_eq!(
        daemon.status()["devices"]
            .as_object()
            .expect("devices")
            .len(),
        2
    );
    assert!(
        daemon.ctl(&["set", "entry_led", "on"]).status.success(),
        "still operating"
    );
}

#[test]
fn reload_that_fails_creating_a_device_rolls_back() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let daemon = Daemon::start(&site);
    let bad = format!(
        "{LED_AND_BUTTON}\n[[device]]\nname = \"trap\"\nkind = \"faulty\"\npin = 9\npanic-in = \"create\"\n"
    );
    site.write_config(&bad);
    let out = daemon.ctl(&["reload"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("trap"), "{stderr}");
    let status = daemon.status();
    assert!(status["devices"].get("trap").is_none(), "{status}");
    assert_eq!(status["devices"]["entry_led"]["state"], "off");
}

#[test]
fn sitectl_reload_applies_a_changed_device() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let daemon = Daemon::start(&site);
    site.write_config(&LED_AND_BUTTON.replace("pin = 17", "pin = 18"));
    let out = daemon.ctl(&["reload"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(daemon.status()["devices"]["entry_led"]["pin"], 18);
}

#[test]
fn sigterm_leaves_every_output_at_its_safe_level() {
    let site = SiteDir::new();
    site.write_config(SITE_DEVICES);
    let daemon = Daemon::start(&site);
    let closed = site.pins()["12"]["pulse_ns"].clone();
    for (device, value) in [
        ("entry_led", "on"),
        ("exit_led", "on"),
        ("siren", "on"),
        ("office_light", "on"),
        ("office_fan", "on"),
        ("office_lock", "on"),
        ("entry_door", "open"),
        ("exit_door", "open"),
    ] {
        let out = daemon.ctl(&["set", device, value]);
        assert!(out.status.success(), "{device} {value}: {:?}", text(&out));
    }
    assert_eq!(site.pins()["22"]["level"], "high");
    daemon.signal(libc::SIGTERM);
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "exit {status}; log:\n{log}");
    let pins = site.pins();
    for pin in ["17", "27", "22", "24", "25", "23"] {
        assert_eq!(
            pins[pin]["level"], "low",
            "GPIO {pin} after SIGTERM: {pins}"
        );
    }
    assert_eq!(
        pins["12"]["pulse_ns"], closed,
        "entry door must be closed: {pins}"
    );
    assert_eq!(
        pins["13"]["pulse_ns"], closed,
        "exit door must be closed: {pins}"
    );
    assert!(!site.socket().exists(), "control socket should be removed");
}

#[test]
fn sigint_stops_cleanly_too() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let daemon = Daemon::start(&site);
    daemon.signal(libc::SIGINT);
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let _first = Daemon::start(&site);
    let other = SiteDir::new();
    // Same socket, different pins file and state.
    let config = format!(
        "[daemon]\ncontrol-socket = \"{}\"\nplugin-dir = \"{}\"\nstate-dir = \"{}\"\n[hardware]\nbackend = \"sim\"\n",
        site.socket().display(),
        build_dir().display(),
        other.path().join("state").display()
    );
    std::fs::write(other.config_path(), config).expect("write");
    let second = Daemon::spawn(&other.config_path(), &site.socket());
    let (status, log) = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("another sited is running"), "{log}");
}

#[test]
fn outputs_are_at_their_safe_level_right_after_start() {
    let site = SiteDir::new();
    site.write_config(SITE_DEVICES);
    let _daemon = Daemon::start(&site);
    let pins = site.pins();
    for pin in ["17", "27", "22", "23", "24", "25"] {
        assert_eq!(pins[pin]["level"], "low", "GPIO {pin}: {pins}");
        assert_eq!(pins[pin]["mode"], "output");
    }
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let site = SiteDir::new();
    site.write_config(LED_AND_BUTTON);
    let notify_path = site.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let daemon = Daemon::spawn_with_env(
        &site.config_path(),
        &site.socket(),
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let next = || {
        let mut buf = [0u8; 512];
        loop {
            match notify.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("no notification: {e}"),
            }
        }
    };
    let first = next();
    assert!(first.starts_with("READY=1\nSTATUS="), "{first}");
    assert_eq!(next(), "WATCHDOG=1", "pinged at half of WATCHDOG_USEC");
    daemon.signal(libc::SIGHUP);
    let reload: Vec<String> = (0..4)
        .map(|_| next())
        .filter(|m| m != "WATCHDOG=1")
        .collect();
    assert!(
        reload.iter().any(|m| m.starts_with("RELOADING=1")),
        "{reload:?}"
    );
    daemon.signal(libc::SIGTERM);
    let stop = wait_for("STOPPING=1", || {
        let m = next();
        m.starts_with("STOPPING=1").then_some(m)
    });
    assert_eq!(stop, "STOPPING=1");
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "{log}");
}

#[test]
fn the_printed_export_line_works_from_any_directory() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    let log = daemon.wait_log("in another terminal: export ");
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("sited: in another terminal: "))
        .expect("the export line");
    assert!(
        line.starts_with(&format!(
            "export SITED_SOCKET={} PATH=",
            daemon.socket.display()
        )),
        "{line}"
    );
    // As a person would use it: pasted into a shell somewhere else entirely (under an emulator,
    // with wrappers that start the build's programs through the runner).
    let wrappers = runner_wrappers();
    let line = match &wrappers {
        Some(dir) => format!("{line} && export PATH={}:$PATH", dir.path().display()),
        None => line.to_string(),
    };
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cd / && {line} && sitectl status"))
        .env_remove("SITED_SOCKET")
        .output()
        .expect("sh");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("staff on premises: 0"),
        "{:?}",
        text(&out)
    );
}

/// Started by hand, outside systemd (no JOURNAL_STREAM or NOTIFY_SOCKET) and without
/// SITED_LOG, sited logs to stderr and does not open with a warning about syslog.
#[test]
fn a_start_outside_systemd_logs_to_stderr_without_a_warning() {
    use std::io::Read;
    let site = SiteDir::new();
    site.write_site_config();
    let child = program(sited_bin())
        .arg("--config")
        .arg(site.config_path())
        .env_remove("SITED_LOG")
        .env_remove("SITED_LOG_LEVEL")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sited");
    let mut sited = Reap(child);
    wait_for("sited to answer status", || {
        ctl_as_root(&site.socket(), &["status", "--json"])
            .status
            .success()
            .then_some(())
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(sited.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_for("sited to stop", || sited.0.try_wait().expect("try_wait"));
    let mut stderr = String::new();
    sited
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(" INFO "),
        "the first line: {first:?}\n{stderr}"
    );
    assert!(!stderr.contains("syslog"), "{stderr}");
    assert!(stderr.contains("ready"), "the log is on stderr: {stderr}");
}

/// `backend = "auto"` never runs on simulated pins: on a machine that is not a Raspberry Pi and
/// has no GPIO chip (this one, in CI) it refuses to start, with one line saying what it read.
#[test]
fn auto_refuses_to_start_without_gpio_hardware_and_says_what_it_read() {
    let board = site_daemon::hw::board::Board::detect();
    let chips = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("gpiochip"))
        })
        .unwrap_or(false);
    if board.model.is_some() || chips {
        eprintln!("skipped: this machine has GPIO hardware, so auto would use it");
        return;
    }
    let site = SiteDir::new();
    let config = site.write_site_config();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("backend = \"sim\"", "backend = \"auto\""),
    )
    .expect("write");
    let daemon = Daemon::spawn(&config, &site.socket());
    let (status, log) = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    let reason = "backend = \"auto\" found no GPIO hardware: not a Raspberry Pi (/sys/firmware/devicetree/base/model: ";
    assert_eq!(log.matches(reason).count(), 1, "once: {log}");
    let line = log.lines().find(|l| l.contains(reason)).expect("the line");
    for what in [
        "/proc/cpuinfo: ",
        "/proc/version: Linux ",
        "no GPIO chip (/dev/gpiochip*)",
        "set backend = \"sim\"",
    ] {
        assert!(line.contains(what), "{what} in {line}");
    }
    assert!(!log.contains("SIMULATED"), "{log}");
    assert!(!site.socket().exists(), "it did not start");
}

/// `sitectl status` says which board this is, and what it read to decide.
#[test]
fn status_shows_the_board_and_what_was_read() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    let out = daemon.ctl(&["status"]);
    let text = text(&out).0;
    let line = text
        .lines()
        .find(|l| l.starts_with("board: "))
        .unwrap_or_else(|| panic!("no board line in\n{text}"));
    let expected = match site_daemon::hw::board::Board::detect().model {
        Some(model) => format!("board: {model} (read "),
        None => "board: not a Raspberry Pi (read ".to_string(),
    };
    assert!(line.starts_with(&expected), "{line}");
    assert!(line.contains("/proc/cpuinfo: "), "{line}");
    let json = daemon.status();
    assert!(
        json["daemon"]["board"]["read"]
            .as_array()
            .is_some_and(|r| r.len() == 4),
        "{json}"
    );
}
