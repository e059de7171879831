//! Helpers for the end-to-end tests: each test gets its own temp directory with a config, runs
//! the real `sited` binary (with the real plugin `.so` files from the build) on the sim
//! backend, and talks to it with the real `sitectl`. Every process a test starts is killed when
//! its handle drops. Waiting is always for a condition with a deadline, never a bare sleep.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single condition may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The directory holding the build's binaries and plugins (target/<triple>/debug).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests live in target/debug/deps/e2e-<hash>; binaries (the bench) in target/release.
    let dir = exe.parent().expect("executable directory");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn sited_bin() -> PathBuf {
    build_dir().join("sited")
}

/// A command running one of this build's programs (`sited`, `sitectl`). Cross-built for the
/// Pi and run under qemu-user, they start through cargo's target runner, as cargo starts the
/// test binaries themselves, not through binfmt_misc (which a CI machine may not have).
pub fn program(bin: impl AsRef<Path>) -> Command {
    match target_runner() {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut command = Command::new(words.next().expect("a runner"));
            command.args(words).arg(bin.as_ref());
            command
        }
        None => Command::new(bin.as_ref()),
    }
}

/// The C compiler for the target the tests were built for (the cross compiler when they run
/// cross-built under qemu-user), as tests/build.rs found it with its flags: C plugins must be
/// built for the daemon's architecture.
pub fn c_compiler() -> Command {
    let mut cmd = Command::new(env!("SITED_TEST_CC"));
    cmd.args(
        env!("SITED_TEST_CC_ARGS")
            .split('\u{1f}')
            .filter(|a| !a.is_empty()),
    );
    cmd
}

/// Under a runner, a directory with a `sitectl` and a `sited` that start the build's through
/// it, for what finds programs by PATH or `$SITED_BIN` (a shell, `sitectl validate`).
pub fn runner_wrappers() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let runner = target_runner()?;
    let dir = tempfile::Builder::new()
        .prefix("sited-runner")
        .tempdir()
        .expect("tempdir");
    for bin in [sited_bin(), sitectl_bin()] {
        let wrapper = dir.path().join(bin.file_name().expect("name"));
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec {runner} {} \"$@\"\n", bin.display()),
        )
        .expect("wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    Some(dir)
}

/// Cargo's runner for this target, when the tests run under one (cross-built).
pub fn target_runner() -> Option<String> {
    if cfg!(target_arch = "aarch64") {
        std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER")
            .ok()
            .filter(|r| !r.trim().is_empty())
    } else {
        None
    }
}

pub fn sitectl_bin() -> PathBuf {
    build_dir().join("sitectl")
}

/// The workspace root (for shipped configs).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The devices of the seed-000 site, as the demo wires them.
pub const SITE_DEVICES: &str = r#"
[[device]]
name = "entry_button"
kind = "button"
pin = 5

[[device]]
name = "exit_button"
kind = "button"
pin = 6

[[device]]
name = "entry_door"
kind = "servo"
pin = 12

[[device]]
name = "exit_door"
kind = "servo"
pin = 13

[[device]]
name = "entry_led"
kind = "led"
pin = 17

[[device]]
name = "exit_led"
kind = "led"
pin = 27

[[device]]
name = "emergency_door"
kind = "reed"
pin = 16

[[device]]
name = "siren"
kind = "siren"
pin = 22

[[device]]
name = "office_door"
kind = "reed"
pin = 20

[[device]]
name = "lock_switch"
kind = "switch"
pin = 21

[[device]]
name = "office_lock"
kind = "relay"
pin = 23

[[device]]
name = "office_light"
kind = "relay"
pin = 24

[[device]]
name = "office_fan"
kind = "relay"
pin = 25
"#;

/// A scratch directory with a config for one daemon.
pub struct SiteDir {
    pub dir: tempfile::TempDir,
}

impl SiteDir {
    pub fn new() -> Self {
        SiteDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("sited.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("control.sock")
    }

    pub fn pins_file(&self) -> PathBuf {
        self.path().join("pins.json")
    }

    /// The daemon/hardware header every test config starts with, plugins from the build.
    pub fn header(&self) -> String {
        self.header_with_plugins(&build_dir())
    }

    pub fn header_with_plugins(&self, plugins: &Path) -> String {
        format!(
            "[daemon]\ncontrol-socket = \"{}\"\nstate-dir = \"{}\"\nplugin-dir = \"{}\"\n\n[hardware]\nbackend = \"sim\"\nsim-pins = \"{}\"\n",
            self.socket().display(),
            self.path().join("state").display(),
            plugins.display(),
            self.pins_file().display()
        )
    }

    /// Writes `sited.toml` = header + `devices`.
    pub fn write_config(&self, devices: &str) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, format!("{}{devices}", self.header())).expect("write config");
        path
    }

    /// The simulated pins as the sim backend last mirrored them.
    pub fn pins(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.pins_file()).expect("pins file");
        serde_json::from_str(&text).expect("pins json")
    }
}

impl Default for SiteDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `sited`. Killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `sited --config <config>` and waits until it answers `status`.
    pub fn start(site: &SiteDir) -> Daemon {
        Daemon::start_with_env(site, &[])
    }

    /// [`Daemon::start`] with extra environment (`SITED_LOG_LEVEL`, ...).
    pub fn start_with_env(site: &SiteDir, env: &[(&str, &str)]) -> Daemon {
        let daemon = Daemon::spawn_with_env(&site.config_path(), &site.socket(), env);
        wait_for("sited to answer status", || {
            if let Some(status) = daemon.try_exit_status() {
                panic!("sited exited early with {status}; log:\n{}", daemon.log());
            }
            ctl_as_root(&daemon.socket, &["status", "--json"])
                .status
                .success()
                .then_some(())
        });
        daemon
    }

    /// Starts sited without waiting for it.
    pub fn spawn(config: &Path, socket: &Path) -> Daemon {
        Daemon::spawn_with_env(config, socket, &[])
    }

    /// Starts sited with extra environment (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
    pub fn spawn_with_env(config: &Path, socket: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = program(sited_bin());
        command
            .arg("--config")
            .arg(config)
            .env("SITED_LOG", "stderr")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sited (run `cargo build --workspace` first)");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut line = String::new();
            while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().expect("log lock").push_str(&line);
                line.clear();
            }
        });
        Daemon {
            child,
            socket: socket.to_path_buf(),
            log,
            reader: Some(reader),
        }
    }

    /// Everything sited has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str) -> String {
        wait_for(&format!("log line containing {needle:?}"), || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        // std's try_wait needs &mut self; a WNOHANG waitpid answers the same question.
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG does not block or touch memory we
        // do not own; if it reaps the child, std's later wait returns ECHILD (handled).
        let pid = unsafe { libc::waitpid(self.child.id() as i32, &mut status, libc::WNOHANG) };
        if pid == self.child.id() as i32 {
            use std::os::unix::process::ExitStatusExt;
            Some(ExitStatus::from_raw(status))
        } else {
            None
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the daemon to exit (after a signal) and returns its status and full log.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_for("sited to exit", || self.child.try_wait().expect("try_wait"));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log();
        (status, log)
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_as_root(&self.socket, args)
    }

    /// `sitectl status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// A device's state word from `status --json`.
    pub fn state(&self, device: &str) -> String {
        self.status()["devices"][device]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    /// Waits until a device shows `state`.
    pub fn wait_state(&self, device: &str, state: &str) {
        wait_for(&format!("{device} to be {state}"), || {
            (self.state(device) == state).then_some(())
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Runs `sitectl -s <socket> args...` and returns its output.
pub fn ctl_as_root(socket: &Path, args: &[&str]) -> Output {
    program(sitectl_bin())
        .arg("-s")
        .arg(socket)
        .args(args)
        .env_remove("SITED_SOCKET")
        .output()
        .expect("run sitectl")
}

/// Runs sitectl as another uid (tests run as root in CI; skip where they do not). The build
/// directory may sit under a 0700 directory (a clone in `mktemp -d`), so the binary is copied
/// somewhere that user can reach first.
pub fn ctl_as_uid(socket: &Path, uid: u32, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("sitectl-as-user")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("sitectl");
    std::fs::copy(sitectl_bin(), &bin).expect("copy sitectl");
    // While the copy was open for writing, another test thread may have forked: its child holds
    // the write descriptor until it execs, and exec of a file open for writing fails with
    // ETXTBSY. That passes within moments, so retry until the deadline.
    wait_for("sitectl copy to become executable", || {
        match program(&bin)
            .arg("-s")
            .arg(socket)
            .args(args)
            .env_remove("SITED_SOCKET")
            .uid(uid)
            .gid(uid)
            .output()
        {
            Ok(out) => Some(out),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => None,
            Err(e) => panic!("run sitectl as another user: {e}"),
        }
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// stdout and stderr as text, for assertion messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends raw bytes on a fresh control connection and returns what came back until EOF or a
/// newline, whichever is first.
pub fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // The daemon may close early (oversized request): a write error then is expected.
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = stream.read(&mut byte) {
        reply.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// The site sections for a node that runs everything: hub (on a free port), access control
/// with a short door time, emergency exit and office.
/// How long each door of a test site stays open: short, but 2 s when cross-built for the Pi
/// and run under an emulator, so a test polling `status` through it still sees each phase.
pub const DOOR_SECS: &str = if cfg!(target_arch = "aarch64") {
    "2.0"
} else {
    "0.3"
};

/// The site modules, with doors open [`DOOR_SECS`].
pub const SITE_SECTIONS: &str = if cfg!(target_arch = "aarch64") {
    SITE_SECTIONS_SLOW
} else {
    SITE_SECTIONS_FAST
};
const SITE_SECTIONS_SLOW: &str = r#"
[access]
open-secs = 2.0

[emergency]

[office]
"#;
const SITE_SECTIONS_FAST: &str = r#"
[access]
open-secs = 0.3

[emergency]

[office]
"#;

/// A loopback hub that lets clients without a key report site events (`anonymous-role =
/// "node"`): for the tests that play a door node by hand with raw `EVENT` lines, and for two
/// daemons whose door node has no key. What the tests about keys and roles check is the
/// default, where site events need a node key.
pub const ANONYMOUS_NODES: &str = "anonymous-role = \"node\"\n";

impl SiteDir {
    pub fn event_log_path(&self) -> PathBuf {
        self.path().join("events.log")
    }

    /// `[hub]` on 127.0.0.1:0 with the event log in this directory.
    pub fn hub_section(&self) -> String {
        format!(
            "\n[hub]\ntcp = \"127.0.0.1:0\"\nevent-log = \"{}\"\n",
            self.event_log_path().display()
        )
    }

    /// [`SiteDir::hub_section`] for a hub that takes site events from clients without a key
    /// ([`ANONYMOUS_NODES`]).
    pub fn hub_section_for_anonymous_nodes(&self) -> String {
        format!("{}{ANONYMOUS_NODES}", self.hub_section())
    }

    /// The whole seed-000 site on one node: devices, hub and all three modules.
    pub fn write_site_config(&self) -> PathBuf {
        self.write_config(&format!(
            "{}{SITE_SECTIONS}{SITE_DEVICES}",
            self.hub_section()
        ))
    }

    /// The event log's lines.
    pub fn event_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.event_log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Daemon {
    /// Staff on the premises as `status --json` reports it.
    pub fn staff(&self) -> Option<u64> {
        self.status()["staff"].as_u64()
    }

    pub fn wait_staff(&self, n: u64) {
        wait_for(&format!("staff count {n}"), || {
            (self.staff() == Some(n)).then_some(())
        });
    }

    /// The hub's actual listening address.
    pub fn hub_addr(&self) -> String {
        self.status()["hub"]["listen"]
            .as_str()
            .expect("hub listen address")
            .to_string()
    }

    /// Presses and releases a button (on the sim backend), each held until the daemon has
    /// seen it, as a person's press outlasts the debounce window.
    pub fn press(&self, button: &str) {
        self.sim(button, "pressed");
        self.sim(button, "released");
    }

    /// Sets a simulated input and waits until its device reports the new state.
    pub fn sim(&self, device: &str, value: &str) {
        let out = self.ctl(&["sim", device, value]);
        assert!(
            out.status.success(),
            "sim {device} {value}: {:?}",
            text(&out)
        );
        self.wait_state(device, value);
    }
}

/// Waits until the event log has `n` lines and returns them.
pub fn wait_log_lines(site: &SiteDir, n: usize) -> Vec<String> {
    wait_for(&format!("{n} event-log lines"), || {
        let lines = site.event_log();
        (lines.len() >= n).then_some(lines)
    })
}

/// Does `line` have the seed-000 shape `YYYY-MM-DD HH:MM:SS, <description>, <staff>`?
pub fn seed_line(line: &str, description_start: &str, staff: u64) -> bool {
    let mut parts = line.splitn(2, ", ");
    let (Some(stamp), Some(rest)) = (parts.next(), parts.next()) else {
        return false;
    };
    let stamp_ok = stamp.len() == 19
        && stamp.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == ' ',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        });
    stamp_ok && rest.starts_with(description_start) && rest.ends_with(&format!(", {staff}"))
}

/// A port nothing listens on right now (bound and released), for a hub started later.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process that is killed and reaped on every path out of a test, like the daemon.
pub struct Reap(pub std::process::Child);

impl Reap {
    /// Starts `python3 tests/seed/<script> <args>`, its output piped: seed 001's own programs.
    pub fn seed_program(script: &str, args: &[&str]) -> Reap {
        let child = std::process::Command::new("python3")
            .arg(workspace_root().join("tests/seed").join(script))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python3 (seed 001's programs are Python)");
        Reap(child)
    }

    /// Waits up to `limit` for it to exit; its exit status, and what it printed on stdout and
    /// then on stderr (a Python traceback, say), as one text.
    pub fn finish(&mut self, limit: Duration) -> (ExitStatus, String) {
        use std::io::Read;
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut printed = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            let _ = out.read_to_string(&mut printed);
        }
        if let Some(mut err) = self.0.stderr.take() {
            let _ = err.read_to_string(&mut printed);
        }
        (status, printed)
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a blocking socket call again when a signal interrupts it (EINTR): the test process
/// gets signals from the children it starts and stops.
pub fn retry_eintr<T>(mut call: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8), so tests
/// can play clients on several hosts. std cannot bind before connecting, so this does.
pub fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("connect_from: IPv4 only");
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the descriptor is checked and then owned by the TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh socket nobody else owns; from here the stream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let local = sockaddr(from, 0);
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes for the duration of the call.
    let rc = unsafe { libc::bind(fd, (&raw const local).cast(), len) };
    assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
    let remote = sockaddr(*to.ip(), to.port());
    // SAFETY: as above, for `remote`.
    let rc = retry_eintr(
        || match unsafe { libc::connect(fd, (&raw const remote).cast(), len) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        },
    );
    rc.unwrap_or_else(|e| panic!("connect {to} from {from}: {e}"));
    stream
}

/// Connects to a control socket as another user: `uid`, primary `gid` and supplementary
/// `groups`, as the daemon sees them through SO_PEERCRED and SO_PEERGROUPS. Needs root. The
/// socket's directories must let that user through.
pub fn connect_as(
    socket: &Path,
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let socket = socket.to_path_buf();
    let groups: Vec<libc::gid_t> = groups.to_vec();
    std::thread::spawn(move || {
        let check = |rc: libc::c_long| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: the raw system calls (not glibc's wrappers, which change every thread of the
        // process) change this thread's credentials only; it connects and ends. `groups`
        // outlives the call and holds `len` gids.
        unsafe {
            check(libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        }
        std::os::unix::net::UnixStream::connect(&socket)
    })
    .join()
    .expect("the connecting thread")
}

/// Lets every user reach `socket` (mode 0666, its directory 0755), so that the daemon's own
/// credential checks are what a test exercises.
pub fn open_socket_to_all(socket: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(
        socket.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod dir");
}

/// The daemon's resident memory in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
}

/// A kept-open control connection, a request per line and an answer per line: faster than a
/// `sitectl` process per request, for tests and benchmarks that ask many times.
pub struct Control {
    writer: std::os::unix::net::UnixStream,
    reader: BufReader<std::os::unix::net::UnixStream>,
}

impl Control {
    pub fn connect(daemon: &Daemon) -> Control {
        let writer = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("control");
        writer.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        Control { writer, reader }
    }

    /// Sends one request (a JSON object) and returns the whole answer.
    pub fn ask(&mut self, request: &str) -> serde_json::Value {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .expect("request");
        let mut line = String::new();
        retry_eintr(|| self.reader.read_line(&mut line)).expect("answer");
        serde_json::from_str(&line).expect("json answer")
    }
}

impl Daemon {
    /// Waits until `module`'s hub link has nothing left in its outbox.
    pub fn wait_outbox_empty(&self, module: &str) {
        wait_for(&format!("{module}'s outbox to empty"), || {
            (self.status()["site"][module]["link"]["outbox"] == 0).then_some(())
        });
    }
}
