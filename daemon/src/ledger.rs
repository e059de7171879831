//! The site's books: the persisted [`State`] and what waits on it being written. The hub side
//! applies reports to the staff counter and answers `OK` only once the change and its
//! event-log line are on disk; the module side numbers reports into durable outboxes and lets
//! the hub links send only what is on disk. All writing happens on the store's thread; this
//! file only decides what to write and releases what waited once it is written.

use crate::hub::server::ConnRef;
use crate::hub::staff;
use crate::site::{Module, Report};
use crate::store::{self, CommitId, Done, EventLog, OutboxEntry, State, Store};
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
