//! Persisted state (`<state-dir>/state.json`) and the seed-000 event log. Both are written by
//! one writer thread, so an fsync on a slow SD card never stalls the event loop (the siren must
//! not wait for the disk). The loop hands over a snapshot and the log lines for one change
//! ("commit"), and is woken as it reaches the disk; only then does the hub answer `OK`.
//!
//! Crash safety: the state file is replaced atomically (temp file, fsync, rename, fsync dir)
//! and carries every event-log line not yet whole in the log as `pending-log`; they are then
//! appended to the event log and fsynced. After a power cut between the two, start-up appends
//! whichever pending lines the log is missing, so the count and the log always agree.
//!
//! The two files fail independently (a full log2ram or tmpfs for the log, a good SD card for
//! the state is common on a Pi). A log that cannot be written never holds up the state file:
//! outboxes and counts keep being persisted while the lines wait in `pending-log`, and an
//! append is all-or-nothing (a short write is cut back to the last whole line before the
//! retry), so the log never holds a torn line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

/// The state file's name inside `state-dir`.
pub const STATE_FILE: &str = "state.json";

/// A report waiting in a module's outbox until its hub acknowledges it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OutboxEntry {
    pub seq: u64,
    pub kind: crate::site::Report,
}

/// Everything that must survive a restart or a power cut.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct State {
    /// Hub: staff on the premises.
    pub staff: u64,
    /// Hub: the last report sequence applied, per client and report epoch.
    pub hub_sequences: crate::hub::sequence::SeenTable,
    /// Module side: this node's report epoch, a random id made with the state. Reports are
    /// numbered within it, so a hub can tell a node that lost its state (and numbers from 1
    /// again) from one resending what it already counted.
    pub epoch: String,
    /// Office: occupied (light and fan come back on at start).
    pub office_occupied: bool,
    /// Emergency: what the hub was last told about the door.
    pub emergency_reported_open: bool,
    /// Threshold rules' states, by rule name (an active rule's device comes back on at start).
    pub rules: BTreeMap<String, crate::site::rules::RuleState>,
    /// Module outboxes, by module (`access`, `emergency`).
    pub outbox: BTreeMap<String, Vec<OutboxEntry>>,
    /// Module sequence counters: the next report's number.
    pub next_seq: BTreeMap<String, u64>,
    /// Event-log lines that may not be whole in the log yet (see the module comment).
    pub pending_log: Vec<String>,
    /// Where in the log they go: the log file and its length when this file was written.
    /// Whatever whole lines stand after that point are the ones a crash let through.
    pub pending_log_at: Option<LogMark>,
}

/// A point in the event log: the file (device and inode, so a rotated log is told apart)
/// and a length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogMark {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
}

impl LogMark {
    fn of(meta: &std::fs::Metadata) -> LogMark {
        use std::os::unix::fs::MetadataExt;
        LogMark {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }
    }
}

/// A new report epoch: 128 bits from the OS's random generator, as 32 hex digits.
pub fn new_epoch() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Loads the state file. A missing file gives defaults; a corrupt one is reported, kept
/// aside as `state.json.corrupt` (never deleted) and defaults are used.
pub fn load_state(dir: &Path) -> (State, Option<String>) {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (State::default(), None),
        Err(e) => {
            return (
                State::default(),
                Some(format!(
                    "cannot read {}: {e}; starting from defaults",
                    path.display()
                )),
            );
        }
    };
    match serde_json::from_str::<State>(&text) {
        Ok(state) => (state, None),
        Err(e) => {
            let aside = dir.join(format!("{STATE_FILE}.corrupt"));
            let kept = std::fs::copy(&path, &aside).map(|_| aside.display().to_string());
            let kept = kept.unwrap_or_else(|err| format!("(could not copy it aside: {err})"));
            (
                State::default(),
                Some(format!(
                    "{} is corrupt ({e}); kept as {kept}; starting from defaults",
                    path.display()
                )),
            )
        }
    }
}

/// Replaces `path` atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file created as `mode` (less what the umask takes away): 0600
/// for keys and secrets, so they are never readable by others, not even for a moment.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    // A stale temp file (a crash mid-write) may have another mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        // A half-written temp file on a full disk would only hold space the retry needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// At start: fsyncs what an earlier run may have left unsynced (killed between a write and
/// its fsync): the state file, its directory, the event log. Best effort: a file that cannot
/// be opened has nothing of ours to sync.
pub fn sync_existing(state_dir: &Path, event_log: Option<&Path>) {
    let state = state_dir.join(STATE_FILE);
    for path in [Some(state.as_path()), Some(state_dir), event_log]
        .into_iter()
        .flatten()
    {
        if let Ok(f) = File::open(path) {
            let _ = f.sync_all();
        }
    }
}

/// Can sited create files in `dir`? Checked at start, so a read-only state directory is
/// reported at once rather than at the first change.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(io::Error::from)
}

/// The seed-000 text log, appended and fsynced, one whole line or nothing. The device log
/// (`[hub] device-log`) is one too.
pub struct EventLog {
    path: PathBuf,
    /// "event log" or "device log", for messages.
    label: &'static str,
    /// fsync each append (the event log, which the hub's acknowledgements wait for); the
    /// device log is a record for people and is left to the page cache.
    sync: bool,
    /// None until it could be opened (a log directory that is not writable yet is a stall,
    /// not a reason to refuse to start).
    file: Option<File>,
    /// The last append failed part-way; the tail is checked before the next one.
    suspect_tail: bool,
    /// ... and where that append started, to cut back to exactly (a cut to the last newline
    /// would keep the whole lines of a half-written batch, and the retry would repeat them).
    cut_back_to: Option<u64>,
}

impl EventLog {
    /// Opens (creating) the log and cuts off a torn last line a crash or full disk left; the
    /// torn line is still in the state's `pending-log` and is appended again whole.
    pub fn open(path: &Path) -> io::Result<EventLog> {
        let mut log = EventLog {
            path: path.to_path_buf(),
            label: "event log",
            sync: true,
            file: None,
            suspect_tail: true,
            cut_back_to: None,
        };
        log.ensure_open()?;
        Ok(log)
    }

    /// A log that could not be opened yet; every append tries again.
    pub fn closed(path: &Path) -> EventLog {
        EventLog {
            path: path.to_path_buf(),
            label: "event log",
            sync: true,
            file: None,
            suspect_tail: true,
            cut_back_to: None,
        }
    }

    /// The device log at `path`, opened at its first line (so a log directory that is not
    /// writable yet is a stall reported then, not an error at start).
    pub fn device_log(path: &Path) -> EventLog {
        EventLog {
            label: "device log",
            sync: false,
            ..EventLog::closed(path)
        }
    }

    /// Opens the file now if it is not open, so a path that cannot be written is reported at
    /// start rather than at the first line.
    pub fn open_now(&mut self) -> io::Result<()> {
        self.ensure_open().map(|_| ())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the log's whole lines end now (see [`State::pending_log_at`]): a half-written
    /// batch is cut back first, so the next append starts exactly here. None if the log
    /// cannot be opened (recovery then searches by text).
    pub fn mark(&mut self) -> Option<LogMark> {
        let file = self.ensure_open().ok()?;
        file.metadata().ok().map(|m| LogMark::of(&m))
    }

    fn ensure_open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)?;
            self.file = Some(file);
            self.suspect_tail = true;
        }
        if let Some(to) = self.cut_back_to {
            let file = self.file.as_mut().expect("opened just above");
            if file.metadata()?.len() > to {
                file.set_len(to)?;
            }
            self.cut_back_to = None;
        }
        if self.suspect_tail {
            let file = self.file.as_mut().expect("opened just above");
            let cut = repair_tail(file)?;
            if cut > 0 {
                let again = if self.label == "event log" {
                    "; it is appended again whole"
                } else {
                    ""
                };
                log::warn!(
                    "{} {}: removed a torn last line ({cut} bytes) that a crash or a full disk left{again}",
                    self.label,
                    self.path.display()
                );
            }
            self.suspect_tail = false;
        }
        Ok(self.file.as_mut().expect("opened just above"))
    }

    /// Reopens the file (after logrotate moved it).
    pub fn reopen(&mut self) -> io::Result<()> {
        let old = self
            .file
            .take()
            .and_then(|f| f.metadata().ok())
            .map(|m| LogMark::of(&m));
        // A cut-back owed to the old file is owed to the new one only if it is the same file.
        let cut = self.cut_back_to.take();
        let now = self.mark();
        if let (Some(cut), Some(old), Some(now)) = (cut, old, now)
            && (old.dev, old.ino) == (now.dev, now.ino)
        {
            self.cut_back_to = Some(cut);
        }
        self.ensure_open().map(|_| ())
    }

    /// Appends `lines` whole, or nothing: a write that fails part-way (a full disk) is cut
    /// back to where it started, so a retry never leaves a torn line behind.
    pub fn append(&mut self, lines: &[String]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        let sync = self.sync;
        let file = self.ensure_open()?;
        let before = file.metadata()?.len();
        let result = file
            .write_all(text.as_bytes())
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            // Only ever shrink, and only what this append added: logrotate's copytruncate
            // may have emptied the file meanwhile.
            let cut = file.metadata().and_then(|m| {
                if m.len() > before {
                    file.set_len(before)
                } else {
                    Ok(())
                }
            });
            if cut.is_err() {
                self.suspect_tail = true;
                self.cut_back_to = Some(before);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Cuts a file back to its last newline; returns how many bytes were removed.
fn repair_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(len)
}

/// The last `n` lines of a text file (reads at most the final 1 MiB).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(start))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut in half
    }
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].iter().map(|l| l.to_string()).collect())
}

/// The pending lines the log is missing (after a crash between the state write and the log
/// append, or while the log's disk was full), in order. The lines after the state's mark are
/// the ones that made it, in order; only if the log was rotated since is it searched by text.
pub fn missing_pending(state: &State, log_path: &Path) -> io::Result<Vec<String>> {
    if state.pending_log.is_empty() {
        return Ok(Vec::new());
    }
    let meta = match std::fs::metadata(log_path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let (Some(mark), Some(meta)) = (state.pending_log_at, &meta) {
        let now = LogMark::of(meta);
        if (now.dev, now.ino) == (mark.dev, mark.ino) && now.len >= mark.len {
            let mut f = File::open(log_path)?;
            f.seek(SeekFrom::Start(mark.len))?;
            let mut after = Vec::new();
            f.read_to_end(&mut after)?;
            let text = String::from_utf8_lossy(&after);
            let made_it = text
                .split_terminator('\n')
                .zip(&state.pending_log)
                .take_while(|(on_disk, pending)| on_disk == pending)
                .count();
            return Ok(state.pending_log[made_it..].to_vec());
        }
    }
    let tail = tail_lines(log_path, state.pending_log.len() + 1000)?;
    Ok(state
        .pending_log
        .iter()
        .filter(|l| !tail.contains(l))
        .cloned()
        .collect())
}

/// Identifies a commit; completions arrive in order. [`AT_START`] stands for what was on disk
/// when sited started.
pub type CommitId = u64;
pub const AT_START: CommitId = 1;

enum Job {
    Commit {
        id: CommitId,
        state: Box<State>,
        lines: Vec<String>,
    },
    /// Lines for the device log.
    DeviceLog(Vec<String>),
    /// SIGHUP: reopen the event log and the device log (logrotate moved them).
    ReopenLog,
}

/// A file the writer cannot write, since when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    pub file: PathBuf,
    pub since: SystemTime,
    pub error: String,
    /// Nothing waits for this file (the device log).
    pub best_effort: bool,
}

/// How far the writer has got: every commit up to `state` has its state file on disk, every
/// commit up to `log` has its event-log lines whole in the log. The hub answers `OK` for a
/// report once both have reached its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub state: CommitId,
    pub log: CommitId,
    pub stalls: Vec<Stall>,
}

/// The writer thread and its queues.
pub struct Store {
    jobs: Option<Sender<Job>>,
    progress: Receiver<Progress>,
    next_id: CommitId,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the writer waits before retrying a failed write (disk full, say).
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The writer's own books, on its thread.
struct Writer {
    state_path: PathBuf,
    log: EventLog,
    /// The newest snapshot not yet on disk.
    unwritten: Option<(CommitId, Box<State>)>,
    /// Lines not yet whole in the log, with their commits.
    pending: Vec<(CommitId, String)>,
    state_done: CommitId,
    state_stall: Option<Stall>,
    log_stall: Option<Stall>,
    devices: Option<DeviceLogWriter>,
}

/// Lines a device log holds at most while it cannot be written; beyond it the oldest go, and
/// how many is said when it works again. It is a record for people, and nothing waits for it.
pub const DEVICE_LOG_BACKLOG: usize = 10_000;

/// The device log's side of the writer: best effort, never holding anything else up.
struct DeviceLogWriter {
    log: EventLog,
    pending: std::collections::VecDeque<String>,
    dropped: u64,
    stall: Option<Stall>,
    /// While it fails, the next try is not before this (the other files' passes do not
    /// rewrite the backlog each time).
    retry_at: Option<std::time::Instant>,
}

impl DeviceLogWriter {
    fn add(&mut self, lines: Vec<String>) {
        self.pending.extend(lines);
        let over = self.pending.len().saturating_sub(DEVICE_LOG_BACKLOG);
        if over > 0 {
            self.pending.drain(..over);
            self.dropped += over as u64;
        }
    }

    fn work(&mut self) {
        if self.pending.is_empty()
            || self
                .retry_at
                .is_some_and(|at| std::time::Instant::now() < at)
        {
            return;
        }
        let lines: Vec<String> = self.pending.iter().cloned().collect();
        match self.log.append(&lines) {
            Ok(()) => {
                self.pending.clear();
                self.retry_at = None;
                if self.stall.take().is_some() {
                    log::info!(
                        "device log: {} written again{}",
                        self.log.path().display(),
                        match std::mem::take(&mut self.dropped) {
                            0 => String::new(),
                            n => format!(
                                " ({n} older line(s) were left out: more than {DEVICE_LOG_BACKLOG} waited)"
                            ),
                        }
                    );
                }
            }
            Err(e) => self.failed(e.to_string()),
        }
    }

    fn failed(&mut self, error: String) {
        self.retry_at = Some(std::time::Instant::now() + RETRY_PAUSE);
        match &mut self.stall {
            Some(s) => s.error = error,
            None => {
                log::error!(
                    "device log: cannot write {}: {error}; retrying every {} s (the hub carries on, and up to {DEVICE_LOG_BACKLOG} lines wait)",
                    self.log.path().display(),
                    RETRY_PAUSE.as_secs()
                );
                self.stall = Some(Stall {
                    file: self.log.path().to_path_buf(),
                    since: SystemTime::now(),
                    error,
                    best_effort: true,
                });
            }
        }
    }
}

impl Writer {
    fn unfinished(&self) -> bool {
        self.unwritten.is_some()
            || !self.pending.is_empty()
            || self.devices.as_ref().is_some_and(|d| !d.pending.is_empty())
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Commit { id, state, lines } => {
                self.pending.extend(lines.into_iter().map(|l| (id, l)));
                self.unwritten = Some((id, state));
            }
            Job::DeviceLog(lines) => {
                if let Some(d) = &mut self.devices {
                    d.add(lines);
                }
            }
            Job::ReopenLog => {
                if let Err(e) = self.log.reopen() {
                    self.log_failed(format!("reopening: {e}"));
                }
                if let Some(d) = &mut self.devices
                    && let Err(e) = d.log.reopen()
                {
                    d.failed(format!("reopening: {e}"));
                }
            }
        }
    }

    /// One pass: the state file first (it carries the pending lines), then the lines whose
    /// state is on disk. Neither waits for the other's failures.
    fn work(&mut self) {
        if let Some((id, mut state)) = self.unwritten.take() {
            state.pending_log = self.pending.iter().map(|(_, l)| l.clone()).collect();
            state.pending_log_at = if state.pending_log.is_empty() {
                None
            } else {
                self.log.mark()
            };
            let written = serde_json::to_vec_pretty(&*state)
                .map_err(io::Error::other)
                .and_then(|bytes| write_atomic(&self.state_path, &bytes));
            match written {
                Ok(()) => {
                    self.state_done = id;
                    if self.state_stall.take().is_some() {
                        log::info!("state: {} written again", self.state_path.display());
                    }
                }
                Err(e) => {
                    self.unwritten = Some((id, state));
                    let path = self.state_path.clone();
                    fail(&mut self.state_stall, &path, e.to_string());
                }
            }
        }
        let ready = self
            .pending
            .iter()
            .take_while(|(id, _)| *id <= self.state_done)
            .count();
        if ready > 0 {
            let lines: Vec<String> = self.pending[..ready]
                .iter()
                .map(|(_, l)| l.clone())
                .collect();
            match self.log.append(&lines) {
                Ok(()) => {
                    self.pending.drain(..ready);
                    if self.log_stall.take().is_some() {
                        log::info!(
                            "event log: {} written again ({ready} waiting line(s) appended)",
                            self.log.path().display()
                        );
                    }
                }
                Err(e) => self.log_failed(e.to_string()),
            }
        }
        if let Some(d) = &mut self.devices {
            d.work();
        }
    }

    fn log_failed(&mut self, error: String) {
        let path = self.log.path().to_path_buf();
        fail(&mut self.log_stall, &path, error);
    }

    fn progress(&self) -> Progress {
        let log = self
            .pending
            .first()
            .map(|(id, _)| id - 1)
            .unwrap_or(self.state_done);
        Progress {
            state: self.state_done,
            log,
            stalls: self
                .state_stall
                .iter()
                .chain(&self.log_stall)
                .chain(self.devices.as_ref().and_then(|d| d.stall.as_ref()))
                .cloned()
                .collect(),
        }
    }
}

/// Records a failure: the first of a run is logged and dated, repeats only update the reason.
fn fail(stall: &mut Option<Stall>, file: &Path, error: String) {
    match stall {
        Some(s) => s.error = error,
        None => {
            log::error!(
                "store: cannot write {}: {error}; retrying every {} s, and holding the hub's acknowledgements until it works",
                file.display(),
                RETRY_PAUSE.as_secs()
            );
            *stall = Some(Stall {
                file: file.to_path_buf(),
                since: SystemTime::now(),
                error,
                best_effort: false,
            });
        }
    }
}

impl Store {
    /// Starts the writer. `pending` are event-log lines from before the start that the log
    /// lacks (appended first); `device_log` is `[hub] device-log`, if set. `wake` is called
    /// after each pass so the loop picks it up.
    pub fn start(
        state_dir: &Path,
        log: EventLog,
        pending: Vec<String>,
        device_log: Option<EventLog>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Store> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (progress_tx, progress) = mpsc::channel();
        let state_path = state_dir.join(STATE_FILE);
        let mut state_stall = None;
        if let Err(e) = check_writable(state_dir) {
            fail(&mut state_stall, &state_path, e.to_string());
        }
        let mut writer = Writer {
            state_path,
            log,
            unwritten: None,
            pending: pending.into_iter().map(|l| (AT_START, l)).collect(),
            state_done: AT_START,
            state_stall,
            log_stall: None,
            devices: device_log.map(|log| DeviceLogWriter {
                log,
                pending: std::collections::VecDeque::new(),
                dropped: 0,
                stall: None,
                retry_at: None,
            }),
        };
        if let Some(d) = &mut writer.devices
            && let Err(e) = d.log.open_now()
        {
            d.failed(e.to_string());
            d.retry_at = None;
        }
        let thread = std::thread::Builder::new()
            .name("sited-store".into())
            .spawn(move || {
                if writer.unfinished() {
                    // Lines from before the start go first.
                    writer.work();
                }
                // The first report always goes, so a stall found at start shows at once.
                let progress = writer.progress();
                let _ = progress_tx.send(progress.clone());
                let mut last_sent = Some(progress);
                wake();
                loop {
                    // Block while there is nothing to do; with failed work, retry each pause.
                    let first = if writer.unfinished() {
                        match job_rx.recv_timeout(RETRY_PAUSE) {
                            Ok(job) => Some(job),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => {
                                // Stopping: one last try, then go (a stuck disk must not
                                // keep sited from exiting).
                                writer.work();
                                if writer.unfinished() {
                                    log::error!(
                                        "store: stopping with unwritten changes: {:?}",
                                        writer.progress().stalls
                                    );
                                }
                                return;
                            }
                        }
                    } else {
                        match job_rx.recv() {
                            Ok(job) => Some(job),
                            Err(_) => return,
                        }
                    };
                    // Coalesce what is queued: one state write, every line, in order.
                    for job in first.into_iter().chain(job_rx.try_iter()) {
                        writer.take(job);
                    }
                    writer.work();
                    let progress = writer.progress();
                    if last_sent.as_ref() != Some(&progress) {
                        if progress_tx.send(progress.clone()).is_err() {
                            return;
                        }
                        last_sent = Some(progress);
                        wake();
                    }
                }
            })?;
        Ok(Store {
            jobs: Some(jobs),
            progress,
            next_id: AT_START,
            thread: Some(thread),
        })
    }

    /// The id the next [`Store::commit`] will return.
    pub fn next_id(&self) -> CommitId {
        self.next_id + 1
    }

    /// Queues a snapshot and its log lines; returns the id its completion will carry.
    pub fn commit(&mut self, state: &State, lines: Vec<String>) -> CommitId {
        self.next_id += 1;
        let id = self.next_id;
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Commit {
                id,
                state: Box::new(state.clone()),
                lines,
            });
        }
        id
    }

    pub fn reopen_log(&mut self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::ReopenLog);
        }
    }

    /// Queues lines for the device log (dropped if none is configured).
    pub fn device_log(&mut self, lines: Vec<String>) {
        if let Some(jobs) = &self.jobs
            && !lines.is_empty()
        {
            let _ = jobs.send(Job::DeviceLog(lines));
        }
    }

    /// The writer's latest progress report, if it sent one since the last look.
    pub fn latest(&self) -> Option<Progress> {
        self.progress.try_iter().last()
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn finish(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One event-log line: `YYYY-MM-DD HH:MM:SS, <description>, <staff>` in local time.
pub fn log_line(at: chrono::DateTime<chrono::Local>, description: &str, staff: u64) -> String {
    format!("{}, {description}, {staff}", at.format("%Y-%m-%d %H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Report;
    use chrono::TimeZone;

    #[test]
    fn log_line_has_the_seed_format() {
        let at = chrono::Local
            .with_ymd_and_hms(2026, 11, 22, 9, 14, 3)
            .single()
            .expect("time");
        assert_eq!(
            log_line(at, "Staff member entered via access control", 3),
            "2026-11-22 09:14:03, Staff member entered via access control, 3"
        );
    }

    #[test]
    fn state_round_trips_through_an_atomic_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State {
            staff: 4,
            office_occupied: true,
            epoch: "0011".into(),
            ..State::default()
        };
        state.outbox.insert(
            "access".into(),
            vec![OutboxEntry {
                seq: 7,
                kind: Report::Entry,
            }],
        );
        crate::hub::sequence::record(&mut state.hub_sequences, "door", "e", 3, 10);
        write_atomic(
            &dir.path().join(STATE_FILE),
            &serde_json::to_vec(&state).expect("json"),
        )
        .expect("write");
        let (loaded, warning) = load_state(dir.path());
        assert_eq!(warning, None);
        assert_eq!(loaded, state);
    }

    #[test]
    fn missing_state_file_gives_defaults_quietly() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_state(dir.path()), (State::default(), None));
    }

    #[test]
    fn corrupt_state_file_is_reported_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{\"staff\": ").expect("write");
        let (state, warning) = load_state(dir.path());
        assert_eq!(state, State::default());
        assert!(warning.expect("warning").contains("corrupt"));
        assert_eq!(
            std::fs::read(dir.path().join("state.json.corrupt")).expect("kept"),
            b"{\"staff\": "
        );
        assert!(
            dir.path().join(STATE_FILE).exists(),
            "the bad file is not deleted"
        );
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        let mut log = EventLog::open(&path).expect("open");
        log.append(&["a".into(), "b".into(), "c".into()])
            .expect("append");
        assert_eq!(tail_lines(&path, 2).expect("tail"), vec!["b", "c"]);
        assert_eq!(tail_lines(&path, 10).expect("tail"), vec!["a", "b", "c"]);
        assert!(
            tail_lines(&dir.path().join("none.log"), 3)
                .expect("tail")
                .is_empty()
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_off_when_the_log_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        std::fs::write(&path, "one\ntwo\nthr").expect("write");
        let mut log = EventLog::open(&path).expect("open");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        log.append(&["three".into()]).expect("append");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
    }

    #[test]
    fn an_append_to_a_full_disk_leaves_nothing_behind() {
        // /dev/full takes no byte; the append fails whole and says why.
        let mut log = EventLog::open(Path::new("/dev/full")).expect("open");
        let e = log.append(&["line".into()]).expect_err("full");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    /// A state whose pending lines were marked at the log's current end.
    fn marked(path: &Path, pending: &[&str]) -> State {
        State {
            pending_log: pending.iter().map(|l| l.to_string()).collect(),
            pending_log_at: Some(LogMark::of(&std::fs::metadata(path).expect("meta"))),
            ..State::default()
        }
    }

    #[test]
    fn recovery_finds_what_made_it_after_the_mark_even_for_a_line_seen_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        let mut log = EventLog::open(&path).expect("open");
        // Two exits at zero in one second are the same line, twice.
        let same = "2026-11-30 10:00:00, Staff member left (door) but the count was already 0 (anomaly), 0";
        log.append(&[same.into()]).expect("append");
        let state = marked(&path, &[same, "next"]);
        assert_eq!(
            missing_pending(&state, &path).expect("missing"),
            vec![same, "next"],
            "the earlier identical line is before the mark"
        );
        log.append(&[same.into()]).expect("append");
        assert_eq!(
            missing_pending(&state, &path).expect("missing"),
            vec!["next"]
        );
        log.append(&["next".into()]).expect("append");
        assert!(missing_pending(&state, &path).expect("missing").is_empty());
    }

    #[test]
    fn recovery_after_a_rotation_falls_back_to_the_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        EventLog::open(&path).expect("open");
        let state = marked(&path, &["one", "two"]);
        std::fs::rename(&path, dir.path().join("events.log.1")).expect("rotate");
        let mut log = EventLog::open(&path).expect("new log");
        log.append(&["one".into()]).expect("append");
        assert_eq!(
            missing_pending(&state, &path).expect("missing"),
            vec!["two"]
        );
    }

    /// A writer over `dir`, with its progress reports.
    fn writer(dir: &Path, log_path: &Path) -> (Store, mpsc::Receiver<()>) {
        writer_with_device_log(dir, log_path, None)
    }

    /// [`writer`] with `[hub] device-log` set.
    fn writer_with_device_log(
        dir: &Path,
        log_path: &Path,
        device_log: Option<EventLog>,
    ) -> (Store, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let tx = std::sync::Mutex::new(tx);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        let log = EventLog::open(log_path).expect("log");
        (
            Store::start(dir, log, Vec::new(), device_log, wake).expect("start"),
            rx,
        )
    }

    fn progress_until(
        store: &Store,
        rx: &mpsc::Receiver<()>,
        done: impl Fn(&Progress) -> bool,
    ) -> Progress {
        loop {
            rx.recv_timeout(Duration::from_secs(10)).expect("woken");
            if let Some(p) = store.latest()
                && done(&p)
            {
                return p;
            }
        }
    }

    #[test]
    fn writer_persists_state_and_lines_then_reports_the_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("log/events.log");
        let (mut store, rx) = writer(dir.path(), &log_path);
        let state = State {
            staff: 1,
            ..State::default()
        };
        let id = store.commit(&state, vec!["line 1".into()]);
        let p = progress_until(&store, &rx, |p| p.log >= id);
        assert_eq!((p.state, p.log), (id, id));
        assert!(p.stalls.is_empty());
        let (loaded, _) = load_state(dir.path());
        assert_eq!(loaded.staff, 1);
        assert_eq!(loaded.pending_log, vec!["line 1"]);
        assert_eq!(tail_lines(&log_path, 5).expect("tail"), vec!["line 1"]);
        store.finish();
    }

    #[test]
    fn a_failing_log_holds_the_lines_but_not_the_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, rx) = writer(dir.path(), Path::new("/dev/full"));
        let first = store.commit(
            &State {
                staff: 1,
                ..State::default()
            },
            vec!["entered, 1".into()],
        );
        let second = store.commit(
            &State {
                staff: 1,
                office_occupied: true,
                ..State::default()
            },
            Vec::new(),
        );
        let p = progress_until(&store, &rx, |p| p.state >= second && !p.stalls.is_empty());
        assert_eq!(p.log, first - 1, "the line is not in the log");
        assert_eq!(p.stalls[0].file, Path::new("/dev/full"));
        let (loaded, _) = load_state(dir.path());
        assert!(loaded.office_occupied, "the later change is on disk");
        assert_eq!(
            loaded.pending_log,
            vec!["entered, 1"],
            "and the line with it"
        );
        store.finish();
    }

    #[test]
    fn a_failing_device_log_holds_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("events.log");
        let devices = EventLog::device_log(Path::new("/dev/full"));
        let (mut store, rx) = writer_with_device_log(dir.path(), &log_path, Some(devices));
        store.device_log(
            (0..DEVICE_LOG_BACKLOG + 10)
                .map(|n| format!("line {n}"))
                .collect(),
        );
        let id = store.commit(&State::default(), vec!["entered, 1".into()]);
        let p = progress_until(&store, &rx, |p| p.log >= id && !p.stalls.is_empty());
        assert_eq!(
            (p.state, p.log),
            (id, id),
            "the event log and state went on"
        );
        assert_eq!(p.stalls[0].file, Path::new("/dev/full"));
        assert!(p.stalls[0].best_effort);
        assert_eq!(tail_lines(&log_path, 5).expect("tail"), vec!["entered, 1"]);
        store.finish();
    }

    #[test]
    fn device_log_lines_are_appended_whole_and_reopened_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("devices.log");
        let (mut store, rx) = writer_with_device_log(
            dir.path(),
            &dir.path().join("events.log"),
            Some(EventLog::device_log(&path)),
        );
        store.device_log(vec!["one".into(), "two".into()]);
        let wait_lines = |path: &Path, n: usize| {
            for _ in 0..1000 {
                let lines = tail_lines(path, 10).unwrap_or_default();
                if lines.len() >= n {
                    return lines;
                }
                let _ = rx.recv_timeout(Duration::from_millis(10));
            }
            panic!("{} never had {n} lines", path.display());
        };
        assert_eq!(wait_lines(&path, 2), vec!["one", "two"]);
        std::fs::rename(&path, dir.path().join("devices.log.1")).expect("rotate");
        store.reopen_log();
        store.device_log(vec!["three".into()]);
        assert_eq!(wait_lines(&path, 1), vec!["three"]);
        store.finish();
    }

    #[test]
    fn the_device_log_backlog_keeps_the_newest_lines() {
        let mut d = DeviceLogWriter {
            log: EventLog::device_log(Path::new("/dev/full")),
            pending: std::collections::VecDeque::new(),
            dropped: 0,
            stall: None,
            retry_at: None,
        };
        d.add(
            (0..DEVICE_LOG_BACKLOG + 10)
                .map(|n| n.to_string())
                .collect(),
        );
        assert_eq!(d.pending.len(), DEVICE_LOG_BACKLOG);
        assert_eq!(d.dropped, 10);
        assert_eq!(d.pending.front().map(String::as_str), Some("10"));
        d.work();
        assert!(d.stall.is_some(), "/dev/full is full");
        assert_eq!(d.pending.len(), DEVICE_LOG_BACKLOG, "kept for the retry");
        assert!(d.retry_at.is_some(), "not tried again before the pause");
    }
}
