//! The seed-000 site end to end: access control, the emergency exit, office automation, the
//! hub's staff counter and its event log, restarts, and a second daemon as a door node.

use site_tests::*;

fn site() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    (site, daemon)
}

/// The whole site, its hub taking site events from clients without a key.
fn site_for_anonymous_nodes() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(&format!(
        "{}{SITE_SECTIONS}{SITE_DEVICES}",
        site.hub_section_for_anonymous_nodes()
    ));
    let daemon = Daemon::start(&site);
    (site, daemon)
}

fn door(daemon: &Daemon, name: &str) -> String {
    daemon.state(name)
}

#[test]
fn entry_opens_entry_door_then_exit_door_and_counts_one_in() {
    let (site, daemon) = site();
    daemon.press("entry_button");
    assert_eq!(door(&daemon, "entry_door"), "open");
    assert_eq!(daemon.state("entry_led"), "on");
    assert_eq!(door(&daemon, "exit_door"), "closed");
    daemon.wait_state("exit_door", "open");
    assert_eq!(door(&daemon, "entry_door"), "closed");
    assert_eq!(daemon.state("exit_led"), "on");
    assert_eq!(daemon.state("entry_led"), "off");
    daemon.wait_state("exit_door", "closed");
    daemon.wait_staff(1);
    let lines = wait_log_lines(&site, 1);
    assert!(
        seed_line(&lines[0], "Staff member entered via access control", 1),
        "{lines:?}"
    );
    assert_eq!(daemon.status()["site"]["access"]["state"], "idle");
}

#[test]
fn exit_opens_the_exit_door_first_and_counts_one_out() {
    let (site, daemon) = site();
    daemon.press("entry_button");
    daemon.wait_staff(1);
    daemon.press("exit_button");
    assert_eq!(door(&daemon, "exit_door"), "open");
    assert_eq!(door(&daemon, "entry_door"), "closed");
    daemon.wait_state("entry_door", "open");
    daemon.wait_staff(0);
    let lines = wait_log_lines(&site, 2);
    assert!(
        seed_line(&lines[1], "Staff member left via access control", 0),
        "{lines:?}"
    );
}

#[test]
fn presses_during_a_cycle_are_ignored_and_logged() {
    let (site, daemon) = site();
    daemon.press("entry_button");
    daemon.press("entry_button");
    daemon.press("exit_button");
    daemon.wait_log("pressed during an entry cycle; ignored");
    daemon.wait_staff(1);
    daemon.wait_state("exit_door", "closed");
    // The entry is acknowledged once its line is in the event log.
    daemon.wait_outbox_empty("access");
    // Nothing else was started: one line, one staff member.
    assert_eq!(daemon.status()["site"]["access"]["state"], "idle");
    assert_eq!(site.event_log().len(), 1);
    assert_eq!(daemon.staff(), Some(1));
}

#[test]
fn exit_at_zero_is_an_anomaly_and_the_count_stays_zero() {
    let (site, daemon) = site();
    daemon.press("exit_button");
    let lines = wait_log_lines(&site, 1);
    assert!(
        seed_line(&lines[0], "Staff member left via access control", 0),
        "{lines:?}"
    );
    assert!(lines[0].contains("anomaly"), "{lines:?}");
    assert_eq!(daemon.staff(), Some(0));
}

#[test]
fn emergency_sounds_the_siren_resets_the_count_and_releases_the_doors() {
    let (site, daemon) = site();
    daemon.press("entry_button");
    daemon.wait_staff(1);
    daemon.press("entry_button");
    daemon.wait_staff(2);
    daemon.sim("emergency_door", "open");
    assert_eq!(daemon.state("siren"), "on");
    assert_eq!(
        door(&daemon, "entry_door"),
        "open",
        "egress: doors released"
    );
    assert_eq!(door(&daemon, "exit_door"), "open");
    daemon.wait_staff(0);
    daemon.press("entry_button");
    assert_eq!(daemon.status()["site"]["access"]["state"], "released");
    daemon.sim("emergency_door", "closed");
    assert_eq!(daemon.state("siren"), "off");
    assert_eq!(door(&daemon, "entry_door"), "closed");
    let lines = wait_log_lines(&site, 4);
    assert!(
        seed_line(&lines[2], "Emergency exit opened", 0),
        "{lines:?}"
    );
    assert!(
        seed_line(&lines[3], "Emergency exit closed", 0),
        "{lines:?}"
    );
    assert_eq!(daemon.staff(), Some(0));
}

#[test]
fn office_visit_toggles_light_and_fan_when_the_door_closes() {
    let (site, daemon) = site();
    daemon.sim("office_door", "open");
    assert_eq!(daemon.state("office_light"), "off");
    daemon.sim("office_door", "closed");
    daemon.wait_state("office_light", "on");
    assert_eq!(daemon.state("office_fan"), "on");
    assert_eq!(daemon.status()["site"]["office"]["occupied"], true);
    daemon.sim("office_door", "open");
    daemon.sim("office_door", "closed");
    daemon.wait_state("office_light", "off");
    assert_eq!(daemon.state("office_fan"), "off");
    assert!(
        site.event_log().is_empty(),
        "the office does not report to the hub"
    );
}

#[test]
fn lock_follows_the_switch_and_a_forced_door_is_logged() {
    let (_site, daemon) = site();
    daemon.sim("lock_switch", "on");
    assert_eq!(daemon.state("office_lock"), "on");
    daemon.sim("office_door", "open");
    daemon.wait_log("FORCED DOOR");
    daemon.sim("lock_switch", "off");
    daemon.wait_state("office_lock", "off");
}

#[test]
fn sitectl_log_shows_the_last_lines_and_count_reset_logs_itself() {
    let (site, daemon) = site();
    daemon.press("entry_button");
    daemon.wait_staff(1);
    let out = daemon.ctl(&["count", "reset"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(daemon.staff(), Some(0));
    let lines = wait_log_lines(&site, 2);
    assert!(
        seed_line(&lines[1], "Staff count reset by hand", 0),
        "{lines:?}"
    );
    let out = daemon.ctl(&["log", "-n", "1"]);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), vec![lines[1].as_str()]);
}

#[test]
fn sitectl_log_follow_prints_new_lines_as_they_happen() {
    let (_site, daemon) = site();
    daemon.press("entry_button");
    daemon.wait_staff(1);
    let mut follower = program(sitectl_bin())
        .arg("-s")
        .arg(&daemon.socket)
        .args(["log", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sitectl log -f");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The first line is the tail: once it is printed, the follower is subscribed.
    let first = rx.recv_timeout(DEADLINE).expect("the tail line");
    assert!(
        seed_line(&first, "Staff member entered via access control", 1),
        "{first}"
    );
    daemon.press("entry_button");
    let line = rx.recv_timeout(DEADLINE).expect("a followed line");
    assert!(
        seed_line(&line, "Staff member entered via access control", 2),
        "{line}"
    );
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn count_and_log_survive_sigterm() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    daemon.press("entry_button");
    daemon.wait_staff(1);
    daemon.press("entry_button");
    daemon.wait_staff(2);
    daemon.signal(libc::SIGTERM);
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "{log}");
    let daemon = Daemon::start(&site);
    assert_eq!(daemon.staff(), Some(2));
    daemon.press("exit_button");
    daemon.wait_staff(1);
    let lines = wait_log_lines(&site, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        seed_line(&lines[2], "Staff member left via access control", 1),
        "{lines:?}"
    );
}

#[test]
fn count_and_log_survive_kill_9() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    daemon.press("entry_button");
    daemon.wait_staff(1);
    daemon.signal(libc::SIGKILL);
    let _ = daemon.wait_exit();
    let daemon = Daemon::start(&site);
    assert_eq!(daemon.staff(), Some(1));
    // A line the kill cut off is appended by the writer as it starts: wait for it.
    assert_eq!(wait_log_lines(&site, 1).len(), 1);
    daemon.press("entry_button");
    daemon.wait_staff(2);
    assert_eq!(wait_log_lines(&site, 2).len(), 2);
}

#[test]
fn an_open_emergency_door_at_start_sounds_the_siren_and_a_cycle_is_not_resumed() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    daemon.sim("emergency_door", "open");
    daemon.wait_staff(0);
    wait_log_lines(&site, 1);
    daemon.signal(libc::SIGKILL);
    let _ = daemon.wait_exit();
    let daemon = Daemon::start(&site);
    assert_eq!(daemon.state("siren"), "on");
    // Already reported before the crash: not reported twice.
    assert_eq!(site.event_log().len(), 1);
    daemon.sim("emergency_door", "closed");
    assert_eq!(daemon.state("siren"), "off");
    assert_eq!(door(&daemon, "entry_door"), "closed");
}

#[test]
fn occupied_office_gets_its_light_back_after_a_restart() {
    let site = SiteDir::new();
    site.write_site_config();
    let daemon = Daemon::start(&site);
    daemon.sim("office_door", "open");
    daemon.sim("office_door", "closed");
    daemon.wait_state("office_light", "on");
    daemon.signal(libc::SIGTERM);
    let _ = daemon.wait_exit();
    assert_eq!(
        site.pins()["24"]["level"],
        "low",
        "light off while sited is down"
    );
    let daemon = Daemon::start(&site);
    assert_eq!(daemon.state("office_light"), "on");
    assert_eq!(daemon.state("office_fan"), "on");
}

/// A door node: access control only, reporting to another daemon's hub at `hub`.
fn door_node(hub: &str) -> (SiteDir, Daemon) {
    let node = SiteDir::new();
    node.write_config(&format!(
        "\n[access]\nopen-secs = {DOOR_SECS}\nhub = \"{hub}\"\nname = \"door-node\"\n{SITE_DEVICES}"
    ));
    let daemon = Daemon::start(&node);
    (node, daemon)
}

#[test]
fn a_second_daemon_as_a_door_node_reports_to_the_first_ones_hub() {
    let (hub_site, hub) = site_for_anonymous_nodes();
    let (_node_site, node) = door_node(&hub.hub_addr());
    node.press("entry_button");
    hub.wait_staff(1);
    let lines = wait_log_lines(&hub_site, 1);
    assert!(
        seed_line(
            &lines[0],
            "Staff member entered via access control (door-node)",
            1
        ),
        "{lines:?}"
    );
    let log = hub.wait_log("registered DEVICE=door-node TYPE=access-control");
    assert!(log.contains("(access control client door-node)"), "{log}");
    assert_eq!(node.staff(), None, "the door node keeps no count");
}

#[test]
fn entries_made_while_the_hub_is_down_arrive_once_when_it_is_back() {
    let port = free_port();
    let (_node_site, node) = door_node(&format!("127.0.0.1:{port}"));
    for _ in 0..3 {
        node.press("entry_button");
        node.wait_state("exit_door", "open");
        node.wait_state("exit_door", "closed");
    }
    wait_for("three reports in the outbox", || {
        (node.status()["site"]["access"]["link"]["outbox"] == 3).then_some(())
    });
    assert_eq!(node.status()["site"]["access"]["link"]["connected"], false);
    let hub_site = SiteDir::new();
    hub_site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:{port}\"\nevent-log = \"{}\"\n{ANONYMOUS_NODES}",
        hub_site.event_log_path().display()
    ));
    let hub = Daemon::start(&hub_site);
    hub.wait_staff(3);
    node.wait_outbox_empty("access");
    let lines = wait_log_lines(&hub_site, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            seed_line(
                line,
                "Staff member entered via access control (door-node)",
                i as u64 + 1
            ),
            "{lines:?}"
        );
    }
}

#[test]
fn a_resent_report_is_acknowledged_but_counted_once() {
    let (site, daemon) = site_for_anonymous_nodes();
    let addr = daemon.hub_addr();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    use std::io::{BufRead, Write};
    stream
        .write_all(b"DEVICE test-door TYPE access-control\nEVENT 1 ENTRY\nEVENT 1 ENTRY\n")
        .expect("send");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    assert_eq!(line, "OK 1\n");
    line.clear();
    reader.read_line(&mut line).expect("reply");
    assert_eq!(line, "OK 1\n");
    assert_eq!(daemon.staff(), Some(1));
    assert_eq!(wait_log_lines(&site, 1).len(), 1);
    stream
        .write_all(b"EVENT 2 EMERGENCY_OPEN\nbogus line\n")
        .expect("send");
    line.clear();
    reader.read_line(&mut line).expect("reply");
    assert!(
        line.starts_with("ERR a access-control client may not report EMERGENCY_OPEN"),
        "{line}"
    );
    line.clear();
    reader.read_line(&mut line).expect("reply");
    assert!(line.starts_with("ERR"), "{line}");
    assert_eq!(daemon.staff(), Some(1));
}

#[test]
fn a_corrupt_state_file_is_reported_kept_and_replaced_by_defaults() {
    let site = SiteDir::new();
    site.write_site_config();
    let state_dir = site.path().join("state");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    std::fs::write(
        state_dir.join("state.json"),
        b"{\"staff\": 3, \"outbox\": [tru",
    )
    .expect("write");
    let daemon = Daemon::start(&site);
    assert_eq!(daemon.staff(), Some(0));
    assert!(daemon.log().contains("is corrupt"), "{}", daemon.log());
    let kept = std::fs::read(state_dir.join("state.json.corrupt")).expect("kept aside");
    assert_eq!(kept, b"{\"staff\": 3, \"outbox\": [tru");
    daemon.press("entry_button");
    daemon.wait_staff(1);
}

#[test]
fn garbage_on_the_hub_port_gets_errors_and_changes_nothing() {
    let (_site, daemon) = site();
    let mut stream = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    use std::io::{BufRead, Write};
    stream
        .write_all(b"EVENT 1 ENTRY\n\xff\xfe\nDEVICE x\n")
        .expect("send");
    stream.write_all(&vec![b'a'; 5000]).expect("send");
    stream.write_all(b"\n").expect("send");
    let mut reader = std::io::BufReader::new(stream);
    let mut replies = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        replies.push(line);
    }
    // Site events need a node key, even on loopback.
    assert!(replies[0].starts_with("ERR forbidden"), "{replies:?}");
    assert!(
        replies[1].starts_with("ERR line is not UTF-8"),
        "{replies:?}"
    );
    assert!(replies[2].starts_with("ERR expected DEVICE"), "{replies:?}");
    assert!(replies[3].starts_with("ERR line too long"), "{replies:?}");
    assert_eq!(daemon.staff(), Some(0));
    daemon.press("entry_button");
    daemon.wait_staff(1);
}

#[test]
fn an_endless_line_on_the_hub_port_gets_an_error_and_the_connection_closes() {
    let (_site, daemon) = site();
    let mut stream = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    use std::io::{Read, Write};
    // The hub may stop reading before all of it is sent; a failed write is fine here.
    let _ = stream.write_all(&vec![b'x'; 200 * 1024]);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("the error, then end of stream");
    assert_eq!(reply, "ERR line too long\n");
    daemon.press("entry_button");
    daemon.wait_staff(1);
}

#[test]
fn unterminated_messages_count_once_they_go_quiet_as_seed_clients_send_them() {
    let (_site, daemon) = site_for_anonymous_nodes();
    let mut stream = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    use std::io::{Read, Write};
    // Seed 001's client: one send() per message, no newline.
    stream
        .write_all(b"DEVICE Sensor01 TYPE temperature")
        .expect("register");
    daemon.wait_log("registered DEVICE=Sensor01 TYPE=temperature");
    let mut door = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    door.set_read_timeout(Some(DEADLINE)).expect("timeout");
    door.write_all(b"DEVICE quiet-door TYPE access-control")
        .expect("register");
    daemon.wait_log("registered DEVICE=quiet-door TYPE=access-control");
    door.write_all(b"EVENT 1 ENTRY").expect("event");
    let mut reply = [0u8; 16];
    let n = retry_eintr(|| door.read(&mut reply)).expect("OK");
    assert_eq!(&reply[..n], b"OK 1\n");
    daemon.wait_staff(1);
}
