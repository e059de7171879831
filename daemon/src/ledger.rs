//! The site's books: the persisted [`State`] and what waits on it being written. The hub side
//! applies reports to the staff counter exactly once per (client, epoch, sequence) and answers
//! `OK` only once the change and its event-log line are on disk; the module side numbers
//! reports into durable outboxes and lets the hub links send only what is on disk. All writing
//! happens on the store's thread; this file only decides what to write and releases what
//! waited once it is written.

use crate::hub::sequence::{self, Verdict};
use crate::hub::server::{ConnRef, Epoch, Reply};
use crate::hub::staff;
use crate::rate_limit::RateLimit;
use crate::site::rules::RuleState;
use crate::site::{Module, Report};
use crate::store::{self, AT_START, CommitId, EventLog, OutboxEntry, Stall, State, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What became durable since the last look.
#[derive(Debug, Default)]
pub struct Released {
    /// Answers that may now be sent on these connections, in order.
    pub acks: Vec<(ConnRef, Reply)>,
    /// Outbox entries up to these sequence numbers are on disk and may be sent.
    pub durable: Vec<(Module, u64)>,
    /// Event-log lines now whole on disk, for `sitectl log -f`.
    pub lines: Vec<String>,
}

pub struct Ledger {
    state: State,
    store: Store,
    event_log: Option<PathBuf>,
    /// How far the writer has got (see [`store::Progress`]).
    state_done: CommitId,
    log_done: CommitId,
    stalls: Vec<Stall>,
    /// Hub side: the commit that applied each node epoch's latest report this run. A resend
    /// is answered once that commit is on disk; epochs not here were on disk at start.
    applied_in: HashMap<(String, String), CommitId>,
    /// Hub side: per-connection epochs: the last report applied and its commit. Dropped
    /// when the connection closes.
    connection_seen: HashMap<ConnRef, (u64, CommitId)>,
    acks: Vec<(CommitId, ConnRef, Reply)>,
    durable: Vec<(CommitId, Module, u64)>,
    lines: Vec<(CommitId, String)>,
    /// Lines a client can cause (every report it sends) are logged at a bounded rate.
    log_limit: RateLimit,
    /// Changes made since the last snapshot went to the writer: the commit they will be
    /// part of, and their event-log lines. The state is copied once per turn of the loop,
    /// not once per change (it can be large, and a client can make many changes quickly).
    dirty: Option<(CommitId, Vec<String>)>,
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
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ledger {
    /// Loads the state (a corrupt file is reported and kept aside), finds event-log lines a
    /// crash or a full disk left out, and starts the writer. `event_log` is set on a node that
    /// runs a hub. A state directory or event log that cannot be written is reported at once
    /// and retried; it does not stop the site from running.
    pub fn open(
        state_dir: &Path,
        event_log: Option<&Path>,
        device_log: Option<&Path>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Ledger, Error> {
        let dir_err = |source| Error::StateDir {
            path: state_dir.into(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(dir_err)?;
        // What a killed sited wrote may still be only in the page cache: make it durable
        // before treating it as on disk (resends of it are acknowledged at once).
        store::sync_existing(state_dir, event_log);
        let (mut state, warning) = store::load_state(state_dir);
        if let Some(w) = warning {
            log::error!("{w}");
        }
        if state.epoch.is_empty() {
            state.epoch = store::new_epoch().map_err(dir_err)?;
            log::info!(
                "state: reports are numbered in a new epoch, {}",
                state.epoch
            );
        }
        let log_path = event_log
            .map(Path::to_path_buf)
            .unwrap_or_else(|| state_dir.join("events.log"));
        let log = EventLog::open(&log_path).unwrap_or_else(|e| {
            log::error!(
                "event log {}: {e}; lines wait in the state file",
                log_path.display()
            );
            EventLog::closed(&log_path)
        });
        let missing = store::missing_pending(&state, &log_path).unwrap_or_else(|e| {
            log::warn!(
                "event log {}: cannot read it back ({e})",
                log_path.display()
            );
            state.pending_log.clone()
        });
        if !missing.is_empty() {
            log::warn!(
                "event log: {} line(s) a crash or a full disk left out are appended first",
                missing.len()
            );
        }
        let log_done = if missing.is_empty() {
            AT_START
        } else {
            AT_START - 1
        };
        let device_log = device_log.map(EventLog::device_log);
        let store = Store::start(state_dir, log, missing, device_log, wake).map_err(dir_err)?;
        Ok(Ledger {
            state,
            store,
            event_log: event_log.map(Path::to_path_buf),
            state_done: AT_START,
            log_done,
            stalls: Vec::new(),
            applied_in: HashMap::new(),
            connection_seen: HashMap::new(),
            acks: Vec::new(),
            durable: Vec::new(),
            lines: Vec::new(),
            log_limit: RateLimit::new(30, Duration::from_secs(10)),
            dirty: None,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn event_log(&self) -> Option<&Path> {
        self.event_log.as_deref()
    }

    /// Files the writer cannot write right now, for `sitectl status`.
    pub fn stalls(&self) -> &[Stall] {
        &self.stalls
    }

    /// This node's report epoch (its links register with it).
    pub fn epoch(&self) -> &str {
        &self.state.epoch
    }

    /// Records a change: it goes to the writer with the others of this turn (see
    /// [`Ledger::flush`]). Returns the commit it will be part of.
    fn commit(&mut self, lines: Vec<String>) -> CommitId {
        let next = self.store.next_id();
        let (id, pending) = self.dirty.get_or_insert_with(|| (next, Vec::new()));
        let id = *id;
        pending.extend(lines.iter().cloned());
        self.lines.extend(lines.into_iter().map(|l| (id, l)));
        id
    }

    /// Hands this turn's changes to the writer: one snapshot of the state, every line. The
    /// loop calls it at the end of each turn.
    pub fn flush(&mut self) {
        if let Some((id, lines)) = self.dirty.take() {
            let sent = self.store.commit(&self.state, lines);
            debug_assert_eq!(sent, id, "commit ids are handed out in order");
        }
    }

    fn log_line(&self, description: &str) -> String {
        store::log_line(chrono::Local::now(), description, self.state.staff)
    }

    /// Hub side: a client's report. Applied once per epoch and number; a resend is answered
    /// `OK` as soon as what it duplicates is on disk (at once if it already is); a number
    /// that skips ahead is refused. Every answer waits its turn behind the connection's
    /// earlier ones.
    pub fn apply_report(
        &mut self,
        conn: ConnRef,
        client: &str,
        epoch: &Epoch,
        seq: u64,
        report: Report,
    ) {
        let (verdict, last_commit) = match epoch {
            Epoch::Node(e) => (
                sequence::check(&self.state.hub_sequences, client, e, seq),
                self.applied_in
                    .get(&(client.to_string(), e.clone()))
                    .copied()
                    .unwrap_or(AT_START),
            ),
            Epoch::Connection(c) => {
                let seen = self.connection_seen.get(c).copied();
                (
                    sequence::classify(seen.map(|s| s.0), seq),
                    seen.map(|s| s.1).unwrap_or(AT_START),
                )
            }
        };
        match verdict {
            Verdict::Duplicate => {
                crate::info_limited!(
                    self.log_limit,
                    "hub: {client} resent report {seq} ({}); already counted",
                    report.wire()
                );
                self.acks.push((last_commit, conn, Reply::Ok(seq)));
            }
            Verdict::OutOfOrder { last } => {
                crate::warn_limited!(
                    self.log_limit,
                    "hub: {client} sent report {seq} ({}) but its last was {last}; refused as out of sequence",
                    report.wire()
                );
                let reason = format!("sequence (expected {} or lower, got {seq})", last + 1);
                self.acks.push((last_commit, conn, Reply::Err(reason)));
            }
            Verdict::New {
                first,
                earlier_epochs,
            } => {
                if first && earlier_epochs {
                    crate::warn_limited!(
                        self.log_limit,
                        "hub: {client} started a new report sequence (state lost?); counting it from report {seq}"
                    );
                }
                let applied = staff::apply(self.state.staff, report, client);
                if applied.anomaly {
                    crate::warn_limited!(
                        self.log_limit,
                        "hub: {client} reported EXIT with no staff on the premises; the count stays 0"
                    );
                }
                self.state.staff = applied.staff;
                if let Epoch::Node(e) = epoch {
                    sequence::record(&mut self.state.hub_sequences, client, e, seq, unix_now());
                }
                let line = self.log_line(&applied.description);
                crate::info_limited!(self.log_limit, "hub: {line}");
                let id = self.commit(vec![line]);
                match epoch {
                    Epoch::Node(e) => {
                        self.applied_in.insert((client.to_string(), e.clone()), id);
                    }
                    Epoch::Connection(c) => {
                        self.connection_seen.insert(*c, (seq, id));
                    }
                }
                self.acks.push((id, conn, Reply::Ok(seq)));
            }
        }
    }

    /// Hub side: a connection closed; its per-connection epoch goes with it.
    pub fn connection_closed(&mut self, conn: ConnRef) {
        self.connection_seen.remove(&conn);
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

    /// SIGHUP: reopen the event log and the device log (logrotate moved them).
    pub fn reopen_log(&mut self) {
        self.store.reopen_log();
    }

    /// Lines for `[hub] device-log`, written by the writer thread.
    pub fn device_log(&mut self, lines: Vec<String>) {
        self.store.device_log(lines);
    }

    /// Collects the writer's progress and releases what waited on it. Cheap when nothing
    /// changed, so it is called after every batch of reports as well as on the writer's wake.
    pub fn released(&mut self) -> Released {
        if let Some(progress) = self.store.latest() {
            self.state_done = progress.state;
            self.log_done = progress.log;
            self.stalls = progress.stalls;
        }
        let (state_done, log_done) = (self.state_done, self.log_done);
        let answered = state_done.min(log_done);
        let mut out = Released::default();
        // Each connection's answers go out in the order they were made: one waiting on the
        // disk holds back that connection's later ones (an `OK` never overtakes an earlier
        // `ERR`), and no other connection's. (The hub server holds its own errors for bad
        // lines behind them in the same way.)
        let mut blocked = std::collections::HashSet::new();
        self.acks.retain(|(id, conn, reply)| {
            if *id <= answered && !blocked.contains(conn) {
                out.acks.push((*conn, reply.clone()));
                false
            } else {
                blocked.insert(*conn);
                true
            }
        });
        self.durable.retain(|&(id, module, seq)| {
            let ready = id <= state_done;
            if ready {
                out.durable.push((module, seq));
            }
            !ready
        });
        let ready = self
            .lines
            .iter()
            .take_while(|(id, _)| *id <= log_done)
            .count();
        out.lines = self.lines.drain(..ready).map(|(_, l)| l).collect();
        // What is on disk now needs no bookkeeping: a miss means "on disk at start or since".
        self.applied_in.retain(|_, id| *id > answered);
        out
    }

    /// Writes what is queued and stops the writer.
    pub fn finish(&mut self) {
        self.flush();
        self.store.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    // Fields drop in order: the ledger (and its writer) before the directory it writes to.
    struct Fixture {
        ledger: Ledger,
        woken: mpsc::Receiver<()>,
        log_path: PathBuf,
        dir: tempfile::TempDir,
    }

    fn open(dir: &Path, log_path: &Path) -> (Ledger, mpsc::Receiver<()>) {
        let (tx, woken) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        (
            Ledger::open(dir, Some(log_path), None, wake).expect("open"),
            woken,
        )
    }

    fn fixture_with_log(log_path: Option<&Path>) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("events.log"));
        let (ledger, woken) = open(dir.path(), &log_path);
        Fixture {
            dir,
            ledger,
            woken,
            log_path,
        }
    }

    fn fixture() -> Fixture {
        fixture_with_log(None)
    }

    /// The ledger closed and opened again on the same files (a restart).
    fn restart(f: Fixture) -> Fixture {
        let Fixture {
            mut ledger,
            log_path,
            dir,
            ..
        } = f;
        ledger.finish();
        drop(ledger);
        let (ledger, woken) = open(dir.path(), &log_path);
        Fixture {
            dir,
            ledger,
            woken,
            log_path,
        }
    }

    /// Waits until the writer has released something matching `done`.
    fn settle(f: &mut Fixture, done: impl Fn(&Released) -> bool) -> Released {
        let mut all = Released::default();
        f.ledger.flush();
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
    const OTHER: ConnRef = ConnRef {
        index: 1,
        generation: 2,
    };

    fn node(e: &str) -> Epoch {
        Epoch::Node(e.to_string())
    }

    #[test]
    fn ok_waits_for_the_disk_and_the_line_has_the_new_count() {
        let mut f = fixture();
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        assert_eq!(f.ledger.state().staff, 1);
        let r = settle(&mut f, |r| !r.acks.is_empty());
        assert_eq!(r.acks, vec![(CONN, Reply::Ok(1))]);
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
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        let r = settle(&mut f, |r| r.acks.len() == 2);
        assert_eq!(r.acks, vec![(CONN, Reply::Ok(1)), (CONN, Reply::Ok(1))]);
        assert_eq!(f.ledger.state().staff, 1);
        assert_eq!(r.lines.len(), 1);
    }

    #[test]
    fn a_resend_of_what_is_already_on_disk_is_acknowledged_at_once() {
        let mut f = fixture();
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        settle(&mut f, |r| !r.acks.is_empty());
        // Same run, on another connection: nothing new is written, and nothing waits.
        f.ledger
            .apply_report(OTHER, "door", &node("e1"), 1, Report::Entry);
        assert_eq!(f.ledger.released().acks, vec![(OTHER, Reply::Ok(1))]);
        // After a restart too.
        let mut f = restart(f);
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        assert_eq!(f.ledger.released().acks, vec![(CONN, Reply::Ok(1))]);
        assert_eq!(f.ledger.state().staff, 1);
    }

    #[test]
    fn a_new_epoch_is_counted_from_its_first_report() {
        let mut f = fixture();
        for seq in 1..=3 {
            f.ledger
                .apply_report(CONN, "door", &node("old"), seq, Report::Entry);
        }
        // The node lost its state: it numbers from 1 again, in a new epoch.
        f.ledger
            .apply_report(CONN, "door", &node("new"), 1, Report::Entry);
        assert_eq!(f.ledger.state().staff, 4);
        let r = settle(&mut f, |r| r.acks.len() == 4);
        assert_eq!(r.acks[3], (CONN, Reply::Ok(1)));
    }

    #[test]
    fn a_number_that_skips_ahead_is_refused_and_changes_nothing() {
        let mut f = fixture();
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 1, Report::Entry);
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 3, Report::Entry);
        let r = settle(&mut f, |r| r.acks.len() == 2);
        assert_eq!(r.acks[0], (CONN, Reply::Ok(1)));
        assert!(
            matches!(&r.acks[1], (CONN, Reply::Err(e)) if e.starts_with("sequence")),
            "{:?}",
            r.acks
        );
        assert_eq!(f.ledger.state().staff, 1);
        f.ledger
            .apply_report(CONN, "door", &node("e1"), 2, Report::Entry);
        assert_eq!(f.ledger.state().staff, 2, "the next number is still new");
    }

    #[test]
    fn a_client_without_an_epoch_cannot_poison_a_nodes_numbering() {
        let mut f = fixture();
        // A forged report under the node's name, on a connection of its own.
        f.ledger.apply_report(
            OTHER,
            "front-access",
            &Epoch::Connection(OTHER),
            u64::MAX,
            Report::Exit,
        );
        f.ledger
            .apply_report(CONN, "front-access", &node("real"), 1, Report::Entry);
        f.ledger
            .apply_report(CONN, "front-access", &node("real"), 2, Report::Entry);
        assert_eq!(f.ledger.state().staff, 2, "the real node's entries count");
        // A per-connection epoch still keeps order and resends on its own connection.
        f.ledger.apply_report(
            OTHER,
            "front-access",
            &Epoch::Connection(OTHER),
            5,
            Report::Exit,
        );
        f.ledger.connection_closed(OTHER);
        assert_eq!(
            f.ledger.state().staff,
            2,
            "5 is neither the next nor a resend"
        );
    }

    #[test]
    fn the_same_sequence_from_another_client_counts() {
        let mut f = fixture();
        f.ledger
            .apply_report(CONN, "front", &node("e"), 1, Report::Entry);
        f.ledger
            .apply_report(CONN, "back", &node("e"), 1, Report::Entry);
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
    fn the_epoch_is_made_once_and_kept_across_restarts() {
        let mut f = fixture();
        let epoch = f.ledger.epoch().to_string();
        assert_eq!(epoch.len(), 32, "{epoch}");
        f.ledger.enqueue(Report::Entry);
        settle(&mut f, |r| !r.durable.is_empty());
        let f = restart(f);
        assert_eq!(f.ledger.epoch(), epoch);
    }

    #[test]
    fn reset_by_hand_zeroes_and_logs() {
        let mut f = fixture();
        f.ledger
            .apply_report(CONN, "door", &node("e"), 1, Report::Entry);
        assert_eq!(f.ledger.reset_count(1000), 1);
        let r = settle(&mut f, |r| r.lines.len() == 2);
        assert!(
            r.lines[1].contains("Staff count reset by hand (was 1, by uid 1000), 0"),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn a_full_log_disk_holds_the_ok_but_not_the_state() {
        let mut f = fixture_with_log(Some(Path::new("/dev/full")));
        f.ledger
            .apply_report(CONN, "door", &node("e"), 1, Report::Entry);
        f.ledger.enqueue(Report::Exit);
        // The outbox entry is persisted (the state file is fine) while the OK waits.
        let r = settle(&mut f, |r| !r.durable.is_empty());
        assert!(r.acks.is_empty(), "{:?}", r.acks);
        wait_until(&mut f, |l| !l.stalls().is_empty());
        let stall = &f.ledger.stalls()[0];
        assert_eq!(stall.file, Path::new("/dev/full"));
        assert!(stall.error.contains("No space left"), "{stall:?}");
        let (on_disk, _) = store::load_state(f.dir.path());
        assert_eq!(on_disk.staff, 1);
        assert_eq!(on_disk.outbox["access"].len(), 1);
        assert_eq!(on_disk.pending_log.len(), 1, "the line waits in the state");
    }

    fn wait_until(f: &mut Fixture, done: impl Fn(&Ledger) -> bool) {
        f.ledger.flush();
        loop {
            let _ = f.ledger.released();
            if done(&f.ledger) {
                return;
            }
            f.woken
                .recv_timeout(Duration::from_secs(10))
                .expect("the writer reported");
        }
    }
}
