//! sitectl against a fake sited: a thread on a temporary Unix socket that reads one request and
//! answers with canned bytes (as ntpd-rs tests its client). Each test runs the whole program
//! through `site_ctl::run_with` and checks exit status, stdout and stderr.

use serde_json::{Value, json};
use site_ctl::Environment;
use site_proto::{ErrorKind, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, Request, Response, encode};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use tempfile::TempDir;

/// How long a test waits for the fake daemon to report the request it received.
const FAKE_REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the fake daemon does after reading the request line.
enum Behaviour {
    /// Write these bytes, then close.
    Answer(Vec<u8>),
    /// Write nothing and wait until the client hangs up.
    Silent,
    /// Hand the connection to this script (a daemon that pushes lines, `log -f`); the
    /// connection closes when it returns.
    Script(Box<dyn FnOnce(&mut UnixStream) + Send>),
}

struct FakeSited {
    _dir: TempDir,
    socket: PathBuf,
    requests: mpsc::Receiver<String>,
}

impl FakeSited {
    fn start(behaviour: Behaviour) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake socket");
        let (tx, requests) = mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("read request");
            let _ = tx.send(line);
            match behaviour {
                // The client may hang up mid-answer (oversized answers): not the fake's problem.
                Behaviour::Answer(bytes) => {
                    let _ = (&stream).write_all(&bytes);
                }
                Behaviour::Silent => {
                    let _ = reader.read_to_end(&mut Vec::new());
                }
                Behaviour::Script(script) => {
                    let mut stream = stream;
                    script(&mut stream);
                }
            }
        });
        FakeSited {
            _dir: dir,
            socket,
            requests,
        }
    }

    fn answering(response: &Response) -> Self {
        FakeSited::start(Behaviour::Answer(encode(response)))
    }

    fn socket(&self) -> &str {
        self.socket.to_str().expect("temp path is UTF-8")
    }

    /// The request line sitectl sent, newline included.
    fn request(&self) -> String {
        self.requests
            .recv_timeout(FAKE_REPORT_TIMEOUT)
            .expect("sitectl sent a request")
    }
}

struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

fn sitectl(args: &[&str]) -> Outcome {
    sitectl_with(&Environment::default(), args)
}

fn sitectl_with(env: &Environment, args: &[&str]) -> Outcome {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = site_ctl::run_with(
        env,
        std::iter::once("sitectl").chain(args.iter().copied()),
        &mut stdout,
        &mut stderr,
    );
    Outcome {
        code,
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

fn request_line(request: &Request) -> String {
    String::from_utf8(encode(request)).expect("UTF-8")
}

fn sample_status() -> Value {
    json!({
        "daemon": {"version": "0.1.0", "pid": 77, "backend": "sim",
                   "config": "/etc/sited/sited.toml", "uptime_secs": 5},
        "devices": {
            "entry_door": {"kind": "servo", "pin": 18, "role": "output", "state": "closed",
                           "detail": {"angle": 0}},
            "entry_button": {"kind": "button", "pin": 17, "role": "input", "state": "released"},
            "siren": {"kind": "siren", "pin": 23, "role": "output", "state": "faulted",
                      "fault": "plugin panicked"}
        },
        "rules": {"fan": {}}
    })
}

/// A missing socket path inside a temp dir, so no real sited is ever reached.
fn nowhere() -> (TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.sock");
    let path = path.to_str().expect("UTF-8").to_string();
    (dir, path)
}

#[test]
fn status_prints_header_and_table() {
    let fake = FakeSited::answering(&Response::ok(sample_status()));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request(), request_line(&Request::Status {}));
    assert!(
        out.stdout
            .starts_with("sited 0.1.0 (pid 77)\nbackend: sim (simulated pins)\n")
    );
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    assert!(rows[1].starts_with("entry_button"));
    assert!(rows[2].ends_with("angle=0"));
    assert!(rows[3].contains("FAULTED") && rows[3].ends_with("fault: plugin panicked"));
    assert!(out.stdout.contains("not shown by this sitectl: rules"));
    assert_eq!(out.stderr, "");
}

#[test]
fn status_json_prints_the_result_object_on_one_line() {
    let fake = FakeSited::answering(&Response::ok(sample_status()));
    let out = sitectl(&["status", "--json", "--socket", fake.socket()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed, sample_status());
}

#[test]
fn status_not_understood_is_exit_2_and_points_to_json() {
    let fake = FakeSited::answering(&Response::ok(json!({"devices": {}})));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("sitectl: cannot understand sited's status")
    );
    assert!(
        out.stderr.trim_end().ends_with("(try --json)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn set_sends_device_and_value_and_confirms_the_reported_state() {
    let fake = FakeSited::answering(&Response::ok(json!({"state": "on"})));
    let out = sitectl(&["-s", fake.socket(), "set", "office_light", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        fake.request(),
        request_line(&Request::Set {
            device: "office_light".into(),
            value: "1".into()
        })
    );
    assert_eq!(out.stdout, "office_light: on\n");
}

#[test]
fn sim_without_a_result_confirms_the_requested_value() {
    let fake = FakeSited::answering(&Response::ok(Value::Null));
    let out = sitectl(&["-s", fake.socket(), "sim", "entry_button", "pressed"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        fake.request(),
        request_line(&Request::Sim {
            device: "entry_button".into(),
            value: "pressed".into()
        })
    );
    assert_eq!(out.stdout, "entry_button: pressed\n");
}

#[test]
fn refused_request_is_exit_1_with_the_daemons_reason() {
    let fake = FakeSited::answering(&Response::err(
        ErrorKind::Rejected,
        "entry_button: sim needs the sim backend",
    ));
    let out = sitectl(&["-s", fake.socket(), "sim", "entry_button", "pressed"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "sitectl: entry_button: sim needs the sim backend\n"
    );
}

#[test]
fn denied_reload_is_exit_1() {
    let fake = FakeSited::answering(&Response::err(ErrorKind::Denied, "operators only"));
    let out = sitectl(&["-s", fake.socket(), "reload"]);
    assert_eq!(out.code, 1);
    assert_eq!(fake.request(), request_line(&Request::Reload {}));
    assert_eq!(out.stderr, "sitectl: operators only\n");
}

#[test]
fn successful_reload_prints_nothing() {
    let fake = FakeSited::answering(&Response::ok(Value::Null));
    let out = sitectl(&["-s", fake.socket(), "reload"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "")
    );
}

#[test]
fn version_prints_both_versions() {
    let fake = FakeSited::answering(&Response::ok(json!({
        "version": "0.1.0", "plugin_abi": [1], "protocol": PROTOCOL_VERSION
    })));
    let out = sitectl(&["-s", fake.socket(), "version"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request(), request_line(&Request::Version {}));
    assert_eq!(
        out.stdout,
        format!(
            "sitectl {} (protocol {PROTOCOL_VERSION})\nsited 0.1.0 (protocol {PROTOCOL_VERSION}, plugin ABI 1)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn version_without_daemon_still_prints_the_client_and_exits_2() {
    let (_dir, socket) = nowhere();
    let out = sitectl(&["-s", &socket, "version"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stdout,
        format!(
            "sitectl {} (protocol {PROTOCOL_VERSION})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("sitectl: cannot connect to sited at ")
    );
}

#[test]
fn version_json_without_daemon_has_null_sited() {
    let (_dir, socket) = nowhere();
    let out = sitectl(&["-s", &socket, "version", "--json"]);
    assert_eq!(out.code, 2);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["sitectl"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["sited"], Value::Null);
}

#[test]
fn sited_socket_from_the_environment_is_used_without_dash_s() {
    let fake = FakeSited::answering(&Response::ok(Value::Null));
    let env = Environment {
        sited_socket: Some(fake.socket.clone().into_os_string()),
        ..Environment::default()
    };
    let out = sitectl_with(&env, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request(), request_line(&Request::Reload {}));
}

#[test]
fn dash_s_wins_over_the_environment() {
    let fake = FakeSited::answering(&Response::ok(Value::Null));
    let (_dir, elsewhere) = nowhere();
    let env = Environment {
        sited_socket: Some(elsewhere.into()),
        ..Environment::default()
    };
    let out = sitectl_with(&env, &["reload", "-s", fake.socket()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request(), request_line(&Request::Reload {}));
}

#[test]
fn missing_socket_is_exit_2_with_one_line() {
    let (_dir, socket) = nowhere();
    let out = sitectl(&["-s", &socket, "status"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        format!(
            "sitectl: cannot connect to sited at {socket}: No such file or directory \
             (is sited running? set -s or SITED_SOCKET)\n"
        )
    );
}

#[test]
fn stale_socket_with_nobody_listening_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    let out = sitectl(&["-s", path.to_str().expect("UTF-8"), "status"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
}

#[test]
fn daemon_closing_without_answer_is_exit_2() {
    let fake = FakeSited::start(Behaviour::Answer(Vec::new()));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "sitectl: sited closed the connection without answering\n"
    );
}

#[test]
fn half_an_answer_then_close_is_exit_2() {
    let fake = FakeSited::start(Behaviour::Answer(b"{\"ok\":\"tr".to_vec()));
    let out = sitectl(&["-s", fake.socket(), "reload"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "sitectl: sited closed the connection without answering\n"
    );
}

#[test]
fn silent_daemon_times_out_with_exit_2() {
    let fake = FakeSited::start(Behaviour::Silent);
    let out = sitectl(&["-s", fake.socket(), "--timeout", "0.2", "status"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("sitectl: sited did not answer within 0.2 s"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn oversized_answer_is_refused() {
    let mut huge = vec![b'x'; MAX_RESPONSE_BYTES + 1];
    huge.push(b'\n');
    let fake = FakeSited::start(Behaviour::Answer(huge));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        format!("sitectl: sited's answer is longer than {MAX_RESPONSE_BYTES} bytes; refusing it\n")
    );
}

#[test]
fn malformed_answer_is_exit_2() {
    let fake = FakeSited::start(Behaviour::Answer(b"hello there\n".to_vec()));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("sitectl: cannot understand sited's answer:"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

/// A stdout whose reader has gone away (`sitectl status | head -0`), or that fails otherwise.
struct FailingStdout(io::ErrorKind);

impl Write for FailingStdout {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(self.0))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::from(self.0))
    }
}

fn status_into(stdout: &mut dyn Write) -> (u8, String) {
    let fake = FakeSited::answering(&Response::ok(sample_status()));
    let mut stderr = Vec::new();
    let code = site_ctl::run_with(
        &Environment::default(),
        ["sitectl", "-s", fake.socket(), "status"],
        stdout,
        &mut stderr,
    );
    (code, String::from_utf8(stderr).expect("UTF-8"))
}

#[test]
fn broken_pipe_on_stdout_exits_quietly() {
    let (code, stderr) = status_into(&mut FailingStdout(io::ErrorKind::BrokenPipe));
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn other_stdout_failure_is_exit_2() {
    let (code, stderr) = status_into(&mut FailingStdout(io::ErrorKind::StorageFull));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("sitectl: cannot write output: "),
        "{stderr}"
    );
}

#[test]
fn help_goes_to_stdout_with_exit_0() {
    let out = sitectl(&["--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Exit status:"), "{}", out.stdout);
    assert_eq!(out.stderr, "");
    // Every operating command is named where the operator group is explained.
    assert!(
        out.stdout
            .contains("`sim`, `set`, `send`, `reload`, `count reset` and `key`\n    operate"),
        "{}",
        out.stdout
    );
    let out = sitectl(&["status", "--help"]);
    assert_eq!(out.code, 0);
    for what in [
        "staff on the premises",
        "hub's ports",
        "rules",
        "Columns: NAME KIND PIN ROLE STATE DETAIL",
    ] {
        assert!(out.stdout.contains(what), "{what}: {}", out.stdout);
    }
    let out = sitectl(&["sim", "--help"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .contains("Works only when sited runs with the sim backend")
    );
}

#[test]
fn usage_error_goes_to_stderr_with_exit_2() {
    let out = sitectl(&["set", "office_light"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("<VALUE>"), "{}", out.stderr);
}

#[test]
fn dash_dash_version_prints_only_the_client() {
    let out = sitectl(&["--version"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        format!("sitectl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

fn fake_sited_binary(dir: &Path, script: &str) {
    let path = dir.join("sited");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn validate_passes_sited_output_and_exit_status_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_sited_binary(
        dir.path(),
        r#"echo "checked $2"; echo "sited.toml: [[device]] 2: unknown key colour" >&2; exit 1"#,
    );
    let env = Environment {
        sited_bin: None,
        current_exe: Some(dir.path().join("sitectl")),
        path: None,
        sited_socket: None,
    };
    let out = sitectl_with(&env, &["validate", "-c", "site.toml"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "checked site.toml\n");
    assert_eq!(out.stderr, "sited.toml: [[device]] 2: unknown key colour\n");
}

#[test]
fn validate_of_a_good_file_is_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_sited_binary(dir.path(), "exit 0");
    let env = Environment {
        sited_bin: Some(dir.path().join("sited").into_os_string()),
        current_exe: None,
        path: None,
        sited_socket: None,
    };
    let out = sitectl_with(&env, &["validate", "--config", "site.toml"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
}

#[test]
fn validate_without_sited_is_exit_2_with_one_line() {
    let empty = tempfile::tempdir().expect("tempdir");
    let env = Environment {
        sited_bin: None,
        current_exe: Some(empty.path().join("sitectl")),
        path: Some(empty.path().as_os_str().to_owned()),
        sited_socket: None,
    };
    let out = sitectl_with(&env, &["validate", "-c", "site.toml"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("sitectl: cannot find sited"));
}

#[test]
fn validate_with_a_missing_sited_bin_is_exit_2() {
    let empty = tempfile::tempdir().expect("tempdir");
    let env = Environment {
        sited_bin: Some(empty.path().join("sited").into_os_string()),
        current_exe: None,
        path: None,
        sited_socket: None,
    };
    let out = sitectl_with(&env, &["validate", "-c", "site.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("sitectl: cannot run ")
            && out.stderr.ends_with(": No such file or directory\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn log_prints_the_lines_sited_sends() {
    let lines = ["2026-11-22 09:14:03, Staff member entered via access control (a), 1"];
    let fake = FakeSited::answering(&Response::ok(json!({ "lines": lines })));
    let out = sitectl(&["-s", fake.socket(), "log", "-n", "5"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        fake.request(),
        request_line(&Request::Log {
            lines: 5,
            follow: false
        })
    );
    assert_eq!(out.stdout, format!("{}\n", lines[0]));
}

#[test]
fn log_follow_prints_pushed_lines_and_exits_2_when_sited_hangs_up() {
    let mut bytes = encode(&Response::ok(json!({ "lines": ["old, 1"] })));
    bytes.extend(encode(&Response::ok(json!({ "line": "new, 2" }))));
    bytes.extend(encode(&Response::ok(json!({ "line": "newer, 3" }))));
    let fake = FakeSited::start(Behaviour::Answer(bytes));
    let out = sitectl(&["-s", fake.socket(), "log", "-f", "-n", "1"]);
    assert_eq!(
        fake.request(),
        request_line(&Request::Log {
            lines: 1,
            follow: true
        })
    );
    assert_eq!(out.stdout, "old, 1\nnew, 2\nnewer, 3\n");
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr, "sitectl: sited closed the connection\n");
}

#[test]
fn log_on_a_node_without_a_hub_is_refused() {
    let fake = FakeSited::answering(&Response::err(ErrorKind::Rejected, "this node runs no hub"));
    let out = sitectl(&["-s", fake.socket(), "log"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "sitectl: this node runs no hub\n");
}

#[test]
fn count_reset_says_what_the_count_was() {
    let fake = FakeSited::answering(&Response::ok(json!({ "staff": 0, "was": 4 })));
    let out = sitectl(&["-s", fake.socket(), "count", "reset"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fake.request(), request_line(&Request::CountReset {}));
    assert_eq!(out.stdout, "staff count reset to 0 (was 4)\n");
}

#[test]
fn log_with_no_lines_yet_prints_nothing() {
    let fake = FakeSited::answering(&Response::ok(json!({ "lines": [] })));
    let out = sitectl(&["-s", fake.socket(), "log"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", "")
    );
    assert_eq!(
        fake.request(),
        request_line(&Request::Log {
            lines: 20,
            follow: false
        })
    );
}

#[test]
fn log_follow_from_zero_prints_only_new_lines() {
    let mut bytes = encode(&Response::ok(json!({ "lines": [] })));
    bytes.extend(encode(&Response::ok(json!({
        "line": "2026-11-22 09:14:03, Staff member entered via access control (door1-access), 3"
    }))));
    let fake = FakeSited::start(Behaviour::Answer(bytes));
    let out = sitectl(&["-s", fake.socket(), "log", "-n", "0", "-f"]);
    assert_eq!(
        fake.request(),
        request_line(&Request::Log {
            lines: 0,
            follow: true
        })
    );
    assert_eq!(
        out.stdout,
        "2026-11-22 09:14:03, Staff member entered via access control (door1-access), 3\n"
    );
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr, "sitectl: sited closed the connection\n");
}

/// A stdout that hands each flushed chunk to the fake daemon, so a test sees what a terminal
/// or pipe would see, and when.
struct FlushedStdout {
    pending: Vec<u8>,
    flushed: mpsc::Sender<String>,
}

impl Write for FlushedStdout {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let chunk = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            let _ = self.flushed.send(chunk);
        }
        Ok(())
    }
}

/// How long the fake stays quiet while sitectl follows: well past the --timeout the test gives.
/// Waiting is the behaviour under test here (no timeout while following), so no condition can
/// stand in for it.
const QUIET_WHILE_FOLLOWING: Duration = Duration::from_millis(500);

#[test]
fn log_follow_flushes_each_line_as_it_arrives_and_never_times_out_while_following() {
    let (flushed_tx, flushed_rx) = mpsc::channel::<String>();
    let (seen_tx, seen_rx) = mpsc::channel::<Vec<String>>();
    // The fake pushes each line only once sitectl has flushed the one before, and reports what
    // it saw flushed (a panic in its thread would only look like sited hanging up).
    let script = move |stream: &mut UnixStream| {
        let mut seen = Vec::new();
        let mut push_and_wait = |stream: &mut UnixStream, response: Response| {
            if stream.write_all(&encode(&response)).is_err() {
                seen.push("<sitectl hung up>".to_string());
                return;
            }
            seen.push(
                flushed_rx
                    .recv_timeout(FAKE_REPORT_TIMEOUT)
                    .unwrap_or_else(|_| "<nothing flushed>".to_string()),
            );
        };
        push_and_wait(stream, Response::ok(json!({ "lines": ["old, 1"] })));
        thread::sleep(QUIET_WHILE_FOLLOWING);
        push_and_wait(stream, Response::ok(json!({ "line": "new, 2" })));
        push_and_wait(stream, Response::ok(json!({ "line": "newer, 1" })));
        let _ = seen_tx.send(seen);
    };
    let fake = FakeSited::start(Behaviour::Script(Box::new(script)));
    let mut stdout = FlushedStdout {
        pending: Vec::new(),
        flushed: flushed_tx,
    };
    let mut stderr = Vec::new();
    let code = site_ctl::run_with(
        &Environment::default(),
        [
            "sitectl",
            "-s",
            fake.socket(),
            "--timeout",
            "0.1",
            "log",
            "--follow",
        ],
        &mut stdout,
        &mut stderr,
    );
    let seen = seen_rx
        .recv_timeout(FAKE_REPORT_TIMEOUT)
        .expect("the fake reports");
    assert_eq!(seen, ["old, 1\n", "new, 2\n", "newer, 1\n"]);
    assert_eq!(
        String::from_utf8_lossy(&stderr),
        "sitectl: sited closed the connection\n"
    );
    assert_eq!(code, 2);
}

#[test]
fn log_follow_into_a_closed_pipe_exits_quietly() {
    let script = |stream: &mut UnixStream| {
        let _ = stream.write_all(&encode(&Response::ok(json!({ "lines": ["old, 1"] }))));
        // Stay connected, as a following sited does, until sitectl hangs up.
        let _ = stream.read_to_end(&mut Vec::new());
    };
    let fake = FakeSited::start(Behaviour::Script(Box::new(script)));
    let mut stderr = Vec::new();
    let code = site_ctl::run_with(
        &Environment::default(),
        ["sitectl", "-s", fake.socket(), "log", "-f"],
        &mut FailingStdout(io::ErrorKind::BrokenPipe),
        &mut stderr,
    );
    assert_eq!((code, String::from_utf8_lossy(&stderr).as_ref()), (0, ""));
}

#[test]
fn log_follow_refused_is_exit_1_before_following() {
    let fake = FakeSited::answering(&Response::err(
        ErrorKind::Rejected,
        "this node runs no hub, so it keeps no event log",
    ));
    let out = sitectl(&["-s", fake.socket(), "log", "-f"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "sitectl: this node runs no hub, so it keeps no event log\n"
    );
}

#[test]
fn count_reset_without_operator_rights_is_exit_1() {
    let fake = FakeSited::answering(&Response::err(
        ErrorKind::Denied,
        "count-reset needs operator rights",
    ));
    let out = sitectl(&["-s", fake.socket(), "count", "reset"]);
    assert_eq!(out.code, 1);
    assert_eq!(fake.request(), request_line(&Request::CountReset {}));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "sitectl: count-reset needs operator rights\n");
}

#[test]
fn count_reset_with_no_answer_in_time_is_exit_2() {
    let fake = FakeSited::start(Behaviour::Silent);
    let out = sitectl(&["-s", fake.socket(), "--timeout", "0.2", "count", "reset"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("sitectl: sited did not answer within 0.2 s"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_shows_staff_site_modules_links_and_hub_before_the_devices() {
    let mut result = sample_status();
    result["staff"] = json!(2);
    result["site"] = json!({
        "access": {"state": "released", "open": ["entry_door", "exit_door"],
                   "link": {"hub": "127.0.0.1:5050", "name": "host-access", "connected": false, "outbox": 3}},
        "emergency": {"door": "open", "siren": "on",
                      "link": {"hub": "127.0.0.1:5050", "name": "host-emergency", "connected": true, "outbox": 0}},
    });
    result["hub"] = json!({"listen": "127.0.0.1:5050", "clients": [
        {"name": "host-emergency", "type": "emergency", "address": "127.0.0.1:41000", "connected_secs": 12}
    ]});
    let fake = FakeSited::answering(&Response::ok(result));
    let out = sitectl(&["-s", fake.socket(), "status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let block: Vec<&str> = out
        .stdout
        .split("\n\n")
        .nth(1)
        .expect("a block after the header")
        .lines()
        .collect();
    assert_eq!(
        block,
        [
            "staff on premises: 2",
            "access:    released (emergency: both doors open)",
            "  -> hub 127.0.0.1:5050 as host-access: DISCONNECTED, outbox 3",
            "emergency: door open, siren on",
            "  -> hub 127.0.0.1:5050 as host-emergency: connected, outbox 0",
            "hub: listening on 127.0.0.1:5050, 1 client",
            "  host-emergency (emergency) from 127.0.0.1:41000, connected for 12s",
        ]
    );
    assert!(
        out.stdout
            .split("\n\n")
            .nth(2)
            .is_some_and(|t| t.starts_with("NAME")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("not shown by this sitectl: rules"));
}

#[test]
fn log_and_count_reset_help_name_their_caveats() {
    let out = sitectl(&["log", "--help"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("Only the node that runs the hub"),
        "{}",
        out.stdout
    );
    let out = sitectl(&["count", "reset", "--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("reset by hand"), "{}", out.stdout);
}
