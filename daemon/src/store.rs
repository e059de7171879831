//! Persisted state (`<state-dir>/state.json`) and the seed-000 event log. Both are written by
//! one writer thread, so an fsync on a slow SD card never stalls the event loop (the siren must
//! not wait for the disk). The loop hands over a snapshot and the log lines for one change
//! ("commit"), and is woken when it is on disk; only then does the hub answer `OK`.
//!
//! Crash safety: the state file is replaced atomically (temp file, fsync, rename, fsync dir)
//! and carries the log lines of its change as `pending-log`; they are then appended to the
//! event log and fsynced. After a power cut between the two, start-up appends whichever
//! pending lines the log is missing, so the count and the log always agree.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

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
    /// Hub: the highest report sequence applied per client name (duplicates are acked only).
    pub hub_seen: BTreeMap<String, u64>,
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
    /// The event-log lines of the change this file records (see the module comment).
    pub pending_log: Vec<String>,
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
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The seed-000 text log, appended and fsynced.
pub struct EventLog {
    path: PathBuf,
    file: File,
}

impl EventLog {
    pub fn open(path: &Path) -> io::Result<EventLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Reopens the file (after logrotate moved it).
    pub fn reopen(&mut self) -> io::Result<()> {
        *self = EventLog::open(&self.path)?;
        Ok(())
    }

    pub fn append(&mut self, lines: &[String]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()
    }
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

/// Appends the pending lines the log is missing (after a crash between the state write and
/// the log append). Returns how many were appended.
pub fn recover_pending(state: &State, log: &mut EventLog, log_path: &Path) -> io::Result<usize> {
    if state.pending_log.is_empty() {
        return Ok(0);
    }
    let tail = tail_lines(log_path, 1000)?;
    let missing: Vec<String> = state
        .pending_log
        .iter()
        .filter(|l| !tail.contains(l))
        .cloned()
        .collect();
    log.append(&missing)?;
    Ok(missing.len())
}

/// Identifies a commit; completions arrive in order.
pub type CommitId = u64;

enum Job {
    Commit {
        id: CommitId,
        state: Box<State>,
        lines: Vec<String>,
    },
    ReopenLog,
}

/// What the writer thread reports back.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// Every commit up to and including this id is on disk.
    Committed(CommitId),
    /// Writing failed; the writer retries until it succeeds. Nothing is acknowledged meanwhile.
    Stalled(String),
}

/// The writer thread and its queues.
pub struct Store {
    jobs: Option<Sender<Job>>,
    /// Set at stop: a failing write is tried once more, not forever, so sited can exit.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    done: Receiver<Done>,
    next_id: CommitId,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the writer waits before retrying a failed write (disk full, say).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

impl Store {
    /// Starts the writer. `wake` is called after each completion so the loop picks it up.
    pub fn start(
        state_dir: &Path,
        mut log: EventLog,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Store> {
        std::fs::create_dir_all(state_dir)?;
        let state_path = state_dir.join(STATE_FILE);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let giving_up = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("sited-store".into())
            .spawn(move || {
                while let Ok(first) = job_rx.recv() {
                    // Coalesce what is queued: one state write, every line, in order.
                    let mut latest: Option<(CommitId, Box<State>)> = None;
                    let mut lines = Vec::new();
                    let mut reopen = false;
                    for job in std::iter::once(first).chain(job_rx.try_iter()) {
                        match job {
                            Job::Commit {
                                id,
                                state,
                                lines: l,
                            } => {
                                lines.extend(l);
                                latest = Some((id, state));
                            }
                            Job::ReopenLog => reopen = true,
                        }
                    }
                    if reopen && let Err(e) = log.reopen() {
                        let _ =
                            done_tx.send(Done::Stalled(format!("reopening the event log: {e}")));
                    }
                    let Some((id, mut state)) = latest else {
                        continue;
                    };
                    state.pending_log = lines.clone();
                    loop {
                        let result = serde_json::to_vec_pretty(&*state)
                            .map_err(io::Error::other)
                            .and_then(|bytes| write_atomic(&state_path, &bytes))
                            .map_err(|e| format!("writing {}: {e}", state_path.display()))
                            .and_then(|()| {
                                log.append(&lines)
                                    .map_err(|e| format!("appending to the event log: {e}"))
                            });
                        match result {
                            Ok(()) => break,
                            Err(e) if giving_up.load(std::sync::atomic::Ordering::SeqCst) => {
                                log::error!("state: {e}; giving up because sited is stopping");
                                return;
                            }
                            Err(e) => {
                                let _ = done_tx.send(Done::Stalled(e));
                                wake();
                                std::thread::sleep(RETRY_PAUSE);
                            }
                        }
                    }
                    if done_tx.send(Done::Committed(id)).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(Store {
            jobs: Some(jobs),
            stopping,
            done,
            next_id: 0,
            thread: Some(thread),
        })
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

    /// Completions so far (non-blocking).
    pub fn completions(&self) -> Vec<Done> {
        self.done.try_iter().collect()
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn finish(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
            ..State::default()
        };
        state.outbox.insert(
            "access".into(),
            vec![OutboxEntry {
                seq: 7,
                kind: Report::Entry,
            }],
        );
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
    fn recovery_appends_only_the_pending_lines_the_log_lacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        let mut log = EventLog::open(&path).expect("open");
        log.append(&["one".into()]).expect("append");
        let state = State {
            pending_log: vec!["one".into(), "two".into()],
            ..State::default()
        };
        assert_eq!(
            recover_pending(&state, &mut log, &path).expect("recover"),
            1
        );
        assert_eq!(tail_lines(&path, 10).expect("tail"), vec!["one", "two"]);
        assert_eq!(recover_pending(&state, &mut log, &path).expect("again"), 0);
    }

    #[test]
    fn writer_persists_state_and_lines_then_reports_the_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("log/events.log");
        let (tx, rx) = mpsc::channel::<()>();
        let tx = std::sync::Mutex::new(tx);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        let mut store =
            Store::start(dir.path(), EventLog::open(&log_path).expect("log"), wake).expect("start");
        let state = State {
            staff: 1,
            ..State::default()
        };
        let id = store.commit(&state, vec!["line 1".into()]);
        let mut done = Vec::new();
        while !done.contains(&Done::Committed(id)) {
            rx.recv_timeout(Duration::from_secs(10)).expect("woken");
            done.extend(store.completions());
        }
        let (loaded, _) = load_state(dir.path());
        assert_eq!(loaded.staff, 1);
        assert_eq!(loaded.pending_log, vec!["line 1"]);
        assert_eq!(tail_lines(&log_path, 5).expect("tail"), vec!["line 1"]);
        store.finish();
    }
}
