//! "Never lost, never counted twice", tried the way it breaks (issue 8): resends after a
//! crash, nodes that lost their state, forged and out-of-order reports, and an event log on a
//! disk that fills up while the state's disk is fine.

use site_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

/// A hand-played hub client: lines out, lines back.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the hub");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("send");
    }

    /// The hub's next line; fails the test if none comes within the deadline.
    fn line(&mut self) -> String {
        let mut line = String::new();
        retry_eintr(|| self.reader.read_line(&mut line)).expect("a reply within the deadline");
        line
    }
}

const EPOCH: &str = "00112233445566778899aabbccddeeff";

/// A hub alone, on a port that stays the same across restarts.
fn hub_on(site: &SiteDir, port: u16) -> Daemon {
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:{port}\"\nevent-log = \"{}\"\n{ANONYMOUS_NODES}",
        site.event_log_path().display()
    ));
    Daemon::start(site)
}

fn restart(site: &SiteDir, daemon: Daemon) -> Daemon {
    daemon.signal(libc::SIGTERM);
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "{status}: {log}");
    Daemon::start(site)
}

#[test]
fn a_resend_is_acknowledged_at_once_on_the_same_connection_a_new_one_and_after_a_restart() {
    let site = SiteDir::new();
    let port = free_port();
    let hub = hub_on(&site, port);
    let addr = format!("127.0.0.1:{port}");
    let mut door = Client::connect(&addr);
    door.send(&format!(
        "DEVICE d TYPE access-control EPOCH {EPOCH}\nEVENT 1 ENTRY\nEVENT 1 ENTRY\n"
    ));
    assert_eq!(door.line(), "OK 1\n");
    assert_eq!(door.line(), "OK 1\n", "the resend on the same connection");
    drop(door);
    // The node reconnects after losing the OK: the hub saves nothing new, and answers anyway.
    let mut door = Client::connect(&addr);
    door.send(&format!(
        "DEVICE d TYPE access-control EPOCH {EPOCH}\nEVENT 1 ENTRY\n"
    ));
    assert_eq!(door.line(), "OK 1\n", "the resend on a new connection");
    drop(door);
    let hub = restart(&site, hub);
    let mut door = Client::connect(&addr);
    door.send(&format!(
        "DEVICE d TYPE access-control EPOCH {EPOCH}\nEVENT 1 ENTRY\nEVENT 2 EXIT\n"
    ));
    assert_eq!(door.line(), "OK 1\n", "the resend after a hub restart");
    assert_eq!(door.line(), "OK 2\n");
    assert_eq!(hub.staff(), Some(0));
    let lines = wait_log_lines(&site, 2);
    assert_eq!(lines.len(), 2, "counted once: {lines:?}");
    hub.wait_log("d resent report 1 (ENTRY); already counted");
}

#[test]
fn the_minimal_reproduction_without_an_epoch_gets_its_ok_on_the_same_connection() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section_for_anonymous_nodes());
    let hub = Daemon::start(&site);
    let mut door = Client::connect(&hub.hub_addr());
    door.send("DEVICE d TYPE access-control\nEVENT 1 ENTRY\nEVENT 1 ENTRY\n");
    assert_eq!(door.line(), "OK 1\n");
    assert_eq!(door.line(), "OK 1\n");
    assert_eq!(hub.staff(), Some(1));
    // Without an epoch, each connection numbers on its own (a hand-written client).
    let mut again = Client::connect(&hub.hub_addr());
    again.send("DEVICE d TYPE access-control\nEVENT 1 ENTRY\n");
    assert_eq!(again.line(), "OK 1\n");
    assert_eq!(hub.staff(), Some(2));
}

#[test]
fn a_client_that_ends_its_input_after_a_report_still_gets_its_ok() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section_for_anonymous_nodes());
    let hub = Daemon::start(&site);
    // As `printf 'DEVICE ...\nEVENT 1 ENTRY\n' | nc` would: send, shut the sending side,
    // then read what comes back.
    let mut door = Client::connect(&hub.hub_addr());
    door.send(&format!(
        "DEVICE d TYPE access-control EPOCH {EPOCH}\nEVENT 1 ENTRY\n"
    ));
    door.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    assert_eq!(door.line(), "OK 1\n");
    assert_eq!(door.line(), "", "then the hub closes");
    assert_eq!(hub.staff(), Some(1));
}

#[test]
fn a_report_that_skips_ahead_is_refused_with_err_sequence_and_changes_nothing() {
    let site = SiteDir::new();
    site.write_config(&site.hub_section_for_anonymous_nodes());
    let hub = Daemon::start(&site);
    let mut door = Client::connect(&hub.hub_addr());
    door.send(&format!(
        "DEVICE d TYPE access-control EPOCH {EPOCH}\nEVENT 1 ENTRY\nEVENT 3 ENTRY\nEVENT 2 ENTRY\n"
    ));
    assert_eq!(door.line(), "OK 1\n");
    let refused = door.line();
    assert!(refused.starts_with("ERR sequence"), "{refused}");
    assert_eq!(door.line(), "OK 2\n", "the next number is still new");
    assert_eq!(hub.staff(), Some(2));
    // Answers come in the order of the lines, bad lines' errors included.
    door.send("EVENT 3 ENTRY\nnonsense\nEVENT 4 ENTRY\n");
    assert_eq!(door.line(), "OK 3\n");
    assert!(door.line().starts_with("ERR unknown command"));
    assert_eq!(door.line(), "OK 4\n");
    hub.wait_log("d sent report 3 (ENTRY) but its last was 1; refused as out of sequence");
}

/// A hub, and a second daemon as a door node reporting to it as `door-node`.
fn hub_and_node() -> (SiteDir, Daemon, SiteDir, Daemon) {
    let hub_site = SiteDir::new();
    hub_site.write_config(&hub_site.hub_section_for_anonymous_nodes());
    let hub = Daemon::start(&hub_site);
    let node_site = SiteDir::new();
    node_site.write_config(&format!(
        "\n[access]\nopen-secs = 0.05\nhub = \"{}\"\nname = \"door-node\"\n{SITE_DEVICES}",
        hub.hub_addr()
    ));
    let node = Daemon::start(&node_site);
    (hub_site, hub, node_site, node)
}

/// One whole entry cycle on the node.
fn enter(node: &Daemon) {
    node.press("entry_button");
    wait_for("the entry cycle to end", || {
        (node.status()["site"]["access"]["state"] == "idle").then_some(())
    });
}

#[test]
fn a_node_that_lost_its_state_is_counted_again_in_a_new_epoch() {
    let (_hub_site, hub, node_site, node) = hub_and_node();
    enter(&node);
    enter(&node);
    hub.wait_staff(2);
    node.signal(libc::SIGTERM);
    node.wait_exit();
    // A new SD card: no state, so the node numbers from 1 again.
    std::fs::remove_file(node_site.path().join("state/state.json")).expect("remove state");
    let node = Daemon::start(&node_site);
    enter(&node);
    hub.wait_staff(3);
    hub.wait_log("door-node started a new report sequence (state lost?)");
    node.wait_outbox_empty("access");
}

#[test]
fn a_forged_report_without_an_epoch_cannot_poison_a_nodes_numbering() {
    let (hub_site, hub, _node_site, node) = hub_and_node();
    enter(&node);
    hub.wait_staff(1);
    let mut forger = Client::connect(&hub.hub_addr());
    forger.send("DEVICE door-node TYPE access-control\nEVENT 18446744073709551615 EXIT\n");
    assert_eq!(forger.line(), "OK 18446744073709551615\n");
    hub.wait_staff(0);
    drop(forger);
    // The real node's next entries all count.
    for n in 1..=5 {
        enter(&node);
        hub.wait_staff(n);
    }
    let lines = wait_log_lines(&hub_site, 7);
    assert_eq!(lines.len(), 7, "{lines:?}");
    node.wait_outbox_empty("access");
}

/// A small tmpfs mounted for one test (root only), unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount -t tmpfs -o {options} {}", dir.display());
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Fills the filesystem holding `dir` with `filler` until the disk says it is full.
fn fill_up(filler: &Path) {
    let mut f = std::fs::File::create(filler).expect("filler");
    let chunk = [b'#'; 512];
    while f.write_all(&chunk).is_ok() {}
}

/// One of the earlier lines the test put in the log, or a whole seed-000 entry line.
fn whole_line(line: &str) -> bool {
    let count = line.rsplit(", ").next().and_then(|n| n.parse::<u64>().ok());
    line.starts_with("2026-01-01 00:00:00, earlier line")
        || count.is_some_and(|n| seed_line(line, "Staff member entered via access control", n))
}

#[test]
fn a_full_event_log_disk_tears_no_line_loses_no_report_and_shows_in_status() {
    let site = SiteDir::new();
    let log_dir = site.path().join("log");
    let Some(_tmpfs) = Tmpfs::mount(&log_dir, "size=16k") else {
        return;
    };
    let log_path = log_dir.join("events.log");
    // Earlier lines leave the log's last page almost full, so a line lands across its end.
    let mut earlier = String::new();
    while earlier.len() < 4096 - 100 {
        earlier.push_str("2026-01-01 00:00:00, earlier line, 0\n");
    }
    std::fs::write(&log_path, &earlier).expect("earlier lines");
    site.write_config(&format!(
        "\n[hub]\ntcp = \"127.0.0.1:0\"\nevent-log = \"{}\"\n\n[access]\nopen-secs = 0.05\n{SITE_DEVICES}",
        log_path.display()
    ));
    fill_up(&log_dir.join("filler"));
    let daemon = Daemon::start(&site);
    // The first line fits in the page; the second finds the disk full. It is counted, but
    // its OK waits for the line, so the third waits in the outbox.
    for _ in 0..3 {
        enter(&daemon);
    }
    let stalled = wait_for("the writer to report the full log", || {
        let status = daemon.status();
        let stall = status["store"]["stalled"][0].clone();
        (!stall.is_null()).then_some(stall)
    });
    assert_eq!(stalled["file"], log_path.display().to_string());
    assert!(
        stalled["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{stalled}"
    );
    let (shown, _) = text(&daemon.ctl(&["status"]));
    assert!(
        shown.contains("store: cannot write events.log since ")
            && shown.contains(": No space left on device"),
        "{shown}"
    );
    assert_eq!(daemon.staff(), Some(2));
    // Two more cycles complete during the stall: their reports wait in the outbox.
    enter(&daemon);
    enter(&daemon);
    assert_eq!(daemon.status()["site"]["access"]["link"]["outbox"], 4);
    daemon.signal(libc::SIGTERM);
    let (status, _) = daemon.wait_exit();
    assert!(status.success());
    let daemon = Daemon::start(&site);
    daemon.wait_log("line(s) a crash or a full disk left out are appended first");
    enter(&daemon);
    daemon.signal(libc::SIGKILL);
    let _ = daemon.wait_exit();
    // Room again: every completed cycle reaches the log, once, whole. "Completed" is what
    // the node's state file says: the last cycle may have ended a moment before the kill
    // and not yet be on disk, and then it never happened as far as the site knows.
    std::fs::remove_file(log_dir.join("filler")).expect("free the disk");
    let daemon = Daemon::start(&site);
    daemon.wait_outbox_empty("access");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(site.path().join("state/state.json")).expect("state"),
    )
    .expect("state json");
    let completed = state["next-seq"]["access"].as_u64().expect("next-seq") - 1;
    assert!(completed >= 5, "{completed} cycles completed of 6");
    daemon.wait_staff(completed);
    let lines = wait_for("every completed cycle in the log", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let entries = lines
            .iter()
            .filter(|l| l.contains("Staff member entered"))
            .count() as u64;
        (entries >= completed).then_some(lines)
    });
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(text.ends_with('\n'), "no torn tail");
    for line in &lines {
        assert!(
            whole_line(line),
            "torn or unexpected line {line:?} in {lines:#?}"
        );
    }
    let entries: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Staff member entered"))
        .collect();
    assert_eq!(entries.len() as u64, completed, "{lines:#?}");
    for (i, line) in entries.iter().enumerate() {
        assert!(
            seed_line(
                line,
                "Staff member entered via access control",
                i as u64 + 1
            ),
            "{entries:#?}"
        );
    }
    assert!(
        daemon.status()["store"]["stalled"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[test]
fn a_read_only_state_directory_is_reported_at_start() {
    let site = SiteDir::new();
    let state = site.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "size=16k,ro") else {
        return;
    };
    site.write_site_config();
    let daemon = Daemon::start(&site);
    daemon.wait_log("Read-only file system");
    let (shown, _) = text(&daemon.ctl(&["status"]));
    assert!(
        shown.contains("store: cannot write state.json since ")
            && shown.contains("Read-only file system"),
        "{shown}"
    );
    // The site itself still runs: the siren sounds.
    daemon.sim("emergency_door", "open");
    assert_eq!(daemon.state("siren"), "on");
}
