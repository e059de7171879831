//! The site's books: the persisted [`State`] and what waits on it being written. The hub side
//! applies reports to the staff counter and answers `OK` only once the change and its
//! event-log line are on disk; the module side numbers reports into durable outboxes and lets
//! the hub links send only what is on disk. All writing happens on the store's thread; this
//! file only decides what to write and releases what waited once it is written.

use crate::hub::server::ConnRef;
use crate::hub::staff;
use crate::site::rules::RuleState;
use crate::site::{Module, Report};
use crate::store::{self, CommitId, Done, EventLog, OutboxEntry, State, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What became durable since the last look.
#[derive(Debug, Default)]
pub struct Released {
    /// `OK <seq>` may now be sent on these connections.
    pub acks: Vec<(ConnRef, u64)>,
    /// Outbox entries up to these sequence numbers are on disk and may be sent.
    pub durable: Vec<(Module, u64)>,
    /// Event-log lines now on disk, for `sitectl log -f`.
    pub lines: Vec<String>,
    /// The writer is failing (disk full?) and retrying; nothing is acknowledged meanwhile.
    pub stalled: Option<String>,
}

pub struct Ledger {
    state: State,
    store: Store,
    event_log: Option<PathBuf>,
    issued: CommitId,
    done: CommitId,
    acks: Vec<(CommitId, ConnRef, u64)>,
    durable: Vec<(CommitId, Module, u64)>,
    lines: Vec<(CommitId, String)>,
    stalled: Option<String>,
}

/// Errors starting the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {path}: {source}", path = path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log {path}: {source}", path = path.display())]
    EventLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Ledger {
    /// Loads the state (a corrupt file is reported and kept aside), repairs the event log after
    /// a crash, and starts the writer. `event_log` is set on a node that runs a hub.
    pub fn open(
        state_dir: &Path,
        event_log: Option<&Path>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Ledger, Error> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::StateDir {
            path: state_dir.into(),
            source,
        })?;
        let (state, warning) = store::load_state(state_dir);
        if let Some(w) = warning {
            log::error!("{w}");
        }
        let log_path = event_log
            .map(Path::to_path_buf)
            .unwrap_or_else(|| state_dir.join("events.log"));
        let log_err = |source| Error::EventLog {
            path: log_path.clone(),
            source,
        };
        let mut log = EventLog::open(&log_path).map_err(log_err)?;
        let recovered = store::recover_pending(&state, &mut log, &log_path).map_err(log_err)?;
        if recovered > 0 {
            log::warn!("event log: appended {recovered} line(s) a crash had left out");
        }
        let store = Store::start(state_dir, log, wake).map_err(|source| Error::StateDir {
            path: state_dir.into(),
            source,
        })?;
        Ok(Ledger {
            state,
            store,
            event_log: event_log.map(Path::to_path_buf),
            issued: 0,
            done: 0,
            acks: Vec::new(),
            durable: Vec::new(),
            lines: Vec::new(),
            stalled: None,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn event_log(&self) -> Option<&Path> {
        self.event_log.as_deref()
    }

    fn commit(&mut self, lines: Vec<String>) -> CommitId {
        self.issued = self.store.commit(&self.state, lines.clone());
        let id = self.issued;
        self.lines.extend(lines.into_iter().map(|l| (id, l)));
        id
    }

    fn log_line(&self, description: &str) -> String {
        store::log_line(chrono::Local::now(), description, self.state.staff)
    }

    /// Hub side: a client's report. Applied once (a sequence already seen is acknowledged and
    /// ignored); the `OK` waits until the change is on disk.
    pub fn apply_report(&mut self, conn: ConnRef, client: &str, seq: u64, report: Report) {
        let seen = self.state.hub_seen.get(client).copied().unwrap_or(0);
        if seq <= seen {
            log::info!(
                "hub: {client} resent report {seq} ({}); already counted",
                report.wire()
            );
            // It was applied by an earlier commit, which may still be on its way to disk.
            self.acks.push((self.issued, conn, seq));
            return;
        }
        let applied = staff::apply(self.state.staff, report, client);
        if applied.anomaly {
            log::warn!(
                "hub: {client} reported EXIT with no staff on the premises; the count stays 0"
            );
        }
        self.state.staff = applied.staff;
        self.state.hub_seen.insert(client.to_string(), seq);
        let line = self.log_line(&applied.description);
        log::info!("hub: {line}");
        let id = self.commit(vec![line]);
        self.acks.push((id, conn, seq));
    }

    /// `sitectl count reset`.
    pub fn reset_count(&mut self, uid: u32) -> u64 {
        let was = self.state.staff;
        self.state.staff = 0;
        let line = self.log_line(&staff::reset_description(was, uid));
        log::warn!("hub: {line}");
        self.commit(vec![line]);
        was
    }

    /// Module side: numbers a report into the module's outbox and persists it.
    pub fn enqueue(&mut self, report: Report) -> u64 {
        let module = report.module();
        let next = self
            .state
            .next_seq
            .entry(module.key().to_string())
            .or_insert(1);
        let seq = *next;
        *next += 1;
        self.state
            .outbox
            .entry(module.key().to_string())
            .or_default()
            .push(OutboxEntry { seq, kind: report });
        if module == Module::Emergency {
            self.state.emergency_reported_open = report == Report::EmergencyOpen;
        }
        let id = self.commit(Vec::new());
        self.durable.push((id, module, seq));
        seq
    }

    /// Module side: the hub acknowledged `seq`; drop it from the outbox.
    pub fn acknowledged(&mut self, module: Module, seq: u64) {
        if let Some(outbox) = self.state.outbox.get_mut(module.key()) {
            let before = outbox.len();
            outbox.retain(|e| e.seq != seq);
            if outbox.len() != before {
                self.commit(Vec::new());
            }
        }
    }

    pub fn outbox(&self, module: Module) -> &[OutboxEntry] {
        self.state
            .outbox
            .get(module.key())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Module side, at start: what is already in the outbox is on disk.
    pub fn durable_seq(&self, module: Module) -> u64 {
        self.outbox(module).last().map(|e| e.seq).unwrap_or(0)
    }

    pub fn set_office_occupied(&mut self, occupied: bool) {
        if self.state.office_occupied != occupied {
            self.state.office_occupied = occupied;
            self.commit(Vec::new());
        }
    }

    pub fn set_rule_states(&mut self, rules: BTreeMap<String, RuleState>) {
        if self.state.rules != rules {
            self.state.rules = rules;
            self.commit(Vec::new());
        }
    }

    /// SIGHUP: reopen the event log (logrotate moved it).
    pub fn reopen_log(&mut self) {
        self.store.reopen_log();
    }

    /// Collects what the writer finished and releases what waited on it.
    pub fn released(&mut self) -> Released {
        for done in self.store.completions() {
            match done {
                Done::Committed(id) => {
                    self.done = self.done.max(id);
                    self.stalled = None;
                }
                Done::Stalled(why) => {
                    log::error!(
                        "state: {why}; retrying, and holding acknowledgements until it works"
                    );
                    self.stalled = Some(why);
                }
            }
        }
        let done = self.done;
        let mut out = Released {
            stalled: self.stalled.clone(),
            ..Released::default()
        };
        self.acks.retain(|&(id, conn, seq)| {
            let ready = id <= done;
            if ready {
                out.acks.push((conn, seq));
            }
            !ready
        });
        self.durable.retain(|&(id, module, seq)| {
            let ready = id <= done;
            if ready {
                out.durable.push((module, seq));
            }
            !ready
        });
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.lines.drain(..).partition(|(id, _)| *id <= done);
        self.lines = waiting;
        out.lines = ready.into_iter().map(|(_, l)| l).collect();
        out
    }

    /// Writes what is queued and stops the writer.
    pub fn finish(&mut self) {
        self.store.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    // Fields drop in order: the ledger (and its writer) before the directory it writes to.
    struct Fixture {
        ledger: Ledger,
        woken: mpsc::Receiver<()>,
        log_path: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("events.log");
        let (tx, woken) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        let ledger = Ledger::open(dir.path(), Some(&log_path), wake).expect("open");
        Fixture {
            _dir: dir,
            ledger,
            woken,
            log_path,
        }
    }

    /// Waits until the writer has released something matching `done`.
    fn settle(f: &mut Fixture, done: impl Fn(&Released) -> bool) -> Released {
        let mut all = Released::default();
        loop {
            let r = f.ledger.released();
            all.acks.extend(r.acks);
            all.durable.extend(r.durable);
            all.lines.extend(r.lines);
            if done(&all) {
                return all;
            }
            f.woken
                .recv_timeout(Duration::from_secs(10))
                .expect("the writer finished");
        }
    }

    const CONN: ConnRef = ConnRef {
        index: 0,
        generation: 1,
    };

    #[test]
    fn ok_waits_for_the_disk_and_the_line_has_the_new_count() {
        let mut f = fixture();
        f.ledger.apply_report(CONN, "door", 1, Report::Entry);
        assert_eq!(f.ledger.state().staff, 1);
        let r = settle(&mut f, |r| !r.acks.is_empty());
        assert_eq!(r.acks, vec![(CONN, 1)]);
        assert!(
            r.lines[0].ends_with("Staff member entered via access control (door), 1"),
            "{:?}",
            r.lines
        );
        assert_eq!(store::tail_lines(&f.log_path, 5).expect("tail"), r.lines);
    }

    #[test]
    fn a_resent_report_is_acknowledged_but_applied_once() {
        let mut f = fixture();
        f.ledger.apply_report(CONN, "door", 1, Report::Entry);
        f.ledger.apply_report(CONN, "door", 1, Report::Entry);
        let r = settle(&mut f, |r| r.acks.len() == 2);
        assert_eq!(r.acks, vec![(CONN, 1), (CONN, 1)]);
        assert_eq!(f.ledger.state().staff, 1);
        assert_eq!(r.lines.len(), 1);
    }

    #[test]
    fn the_same_sequence_from_another_client_counts() {
        let mut f = fixture();
        f.ledger.apply_report(CONN, "front", 1, Report::Entry);
        f.ledger.apply_report(CONN, "back", 1, Report::Entry);
        assert_eq!(f.ledger.state().staff, 2);
    }

    #[test]
    fn an_outbox_entry_is_sendable_once_durable_and_leaves_on_ack() {
        let mut f = fixture();
        let seq = f.ledger.enqueue(Report::Exit);
        assert_eq!(seq, 1);
        assert_eq!(f.ledger.outbox(Module::Access).len(), 1);
        let r = settle(&mut f, |r| !r.durable.is_empty());
        assert_eq!(r.durable, vec![(Module::Access, 1)]);
        f.ledger.acknowledged(Module::Access, 1);
        assert!(f.ledger.outbox(Module::Access).is_empty());
        assert_eq!(
            f.ledger.enqueue(Report::Entry),
            2,
            "sequence numbers never repeat"
        );
    }

    #[test]
    fn reset_by_hand_zeroes_and_logs() {
        let mut f = fixture();
        f.ledger.apply_report(CONN, "door", 1, Report::Entry);
        assert_eq!(f.ledger.reset_count(1000), 1);
        let r = settle(&mut f, |r| r.lines.len() == 2);
        assert!(
            r.lines[1].contains("Staff count reset by hand (was 1, by uid 1000), 0"),
            "{:?}",
            r.lines
        );
    }
}
