//! A site module's link to its hub (this daemon's own, or another node's): a TCP client that
//! registers (`DEVICE <name> TYPE <type> EPOCH <epoch>`, the epoch its reports are numbered
//! in), then sends the module's outbox one report at a time
//! (`EVENT <seq> <KIND>`) and drops each only on `OK <seq>`. It reconnects with backoff. The
//! outbox lives in the state file, and a report is sent only once it is on disk, so a report
//! made while the hub is down is delivered when it is back, and the hub's duplicate check makes
//! it count exactly once.

use super::protocol;
use crate::conn_io::{Chunk, Flushed, LineConn};
use crate::store::OutboxEntry;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A link has at most one report in flight, so its output is one line; this only bounds
/// what a misbehaving hub could make it hold.
const BACKPRESSURE_BYTES: usize = 64 * 1024;

struct Conn {
    io: LineConn<TcpStream>,
    connected: bool,
}

/// What happened on the link's socket.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkOutcome {
    /// Sequence numbers the hub acknowledged.
    pub acked: Vec<u64>,
    /// The connection is gone; retry after this long.
    pub retry_in: Option<Duration>,
}

pub struct HubLink {
    /// The outbox key and log prefix (`access`, `emergency`).
    pub module: &'static str,
    /// The name it registers with; unique per site.
    pub name: String,
    kind: &'static str,
    /// The node's report epoch (see `hub::sequence`).
    epoch: String,
    pub addr: SocketAddr,
    /// The loop's token for this link's socket.
    token: Token,
    conn: Option<Conn>,
    in_flight: Option<u64>,
    /// Outbox entries up to this sequence are on disk and may be sent.
    durable_seq: u64,
    backoff: Duration,
    /// Said once per outage, not at every retry.
    reported_down: bool,
    /// Why the hub last refused a report, until one is accepted (for `sitectl status`).
    refused: Option<String>,
}

impl HubLink {
    pub fn new(
        module: &'static str,
        name: String,
        kind: &'static str,
        epoch: String,
        addr: SocketAddr,
        token: Token,
    ) -> Self {
        HubLink {
            module,
            name,
            kind,
            epoch,
            addr,
            token,
            conn: None,
            in_flight: None,
            durable_seq: 0,
            backoff: FIRST_RETRY,
            reported_down: false,
            refused: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.connected)
    }

    /// Entries up to `seq` are persisted and may go out.
    pub fn set_durable(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// Starts a connection attempt (non-blocking).
    pub fn connect(&mut self, registry: &Registry) -> Result<(), Duration> {
        self.conn = None;
        self.in_flight = None;
        match TcpStream::connect(self.addr) {
            Ok(mut stream) => {
                if registry
                    .register(
                        &mut stream,
                        self.token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
                {
                    return Err(self.lost("could not register the socket"));
                }
                // Registered for writability: that is how the connect's end is seen.
                let io = LineConn::new(
                    stream,
                    self.token,
                    protocol::MAX_LINE_BYTES,
                    BACKPRESSURE_BYTES,
                    true,
                );
                self.conn = Some(Conn {
                    io,
                    connected: false,
                });
                Ok(())
            }
            Err(e) => Err(self.lost(&e.to_string())),
        }
    }

    /// Records a lost or failed connection and returns how long to wait before retrying.
    fn lost(&mut self, why: &str) -> Duration {
        if !self.reported_down {
            log::warn!(
                "{}: hub at {} unreachable ({why}); reports wait in the outbox",
                self.module,
                self.addr
            );
            self.reported_down = true;
        }
        self.conn = None;
        self.in_flight = None;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        wait
    }

    /// Handles readiness on the link's socket.
    pub fn ready(&mut self, registry: &Registry) -> LinkOutcome {
        let mut outcome = LinkOutcome::default();
        match self.read(&mut outcome) {
            Ok(()) => self.flush(registry, &mut outcome),
            Err(why) => {
                if let Some(conn) = self.conn.as_mut() {
                    conn.io.deregister(registry);
                }
                outcome.retry_in = Some(self.lost(&why));
            }
        }
        outcome
    }

    /// Completes a connect, then reads the hub's replies. `Err` means the link is lost.
    fn read(&mut self, outcome: &mut LinkOutcome) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if !conn.connected {
            match (conn.io.stream().take_error(), conn.io.stream().peer_addr()) {
                (Ok(None), Ok(_)) => {
                    conn.connected = true;
                    conn.io.queue(
                        protocol::register_line(&self.name, self.kind, Some(&self.epoch))
                            .as_bytes(),
                    );
                    log::info!(
                        "{}: connected to hub at {} as {}",
                        self.module,
                        self.addr,
                        self.name
                    );
                    self.reported_down = false;
                    self.backoff = FIRST_RETRY;
                }
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                (Ok(Some(e)), _) | (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
            }
        }
        // Every chunk's lines are taken before the next read, so the input never holds more
        // than one line and one chunk.
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            match conn.io.read_chunk() {
                Chunk::Got(_) => {}
                Chunk::Empty => return Ok(()),
                Chunk::Eof => return Err("the hub closed the connection".into()),
            }
            self.take_replies(outcome)?;
        }
    }

    /// Acts on the hub's complete reply lines.
    fn take_replies(&mut self, outcome: &mut LinkOutcome) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        while let Some(raw) = conn.io.next_line() {
            let Ok(raw) = raw else {
                return Err("the hub sent an overlong line".into());
            };
            let line = String::from_utf8_lossy(&raw).to_string();
            match protocol::parse_reply(&line) {
                Ok(seq) if Some(seq) == self.in_flight => {
                    outcome.acked.push(seq);
                    self.in_flight = None;
                    self.refused = None;
                }
                Ok(seq) => log::debug!("{}: stray OK {seq} from the hub", self.module),
                Err(reason) => {
                    // The report stays in the outbox; the link reconnects with backoff and
                    // tries again (a hub restored from an old backup, say, needs a person).
                    let reason = crate::rate_limit::escape(&reason).into_owned();
                    if self.refused.as_deref() != Some(reason.as_str()) {
                        log::error!(
                            "{}: the hub refused report {}: {reason}",
                            self.module,
                            self.in_flight.unwrap_or(0)
                        );
                    }
                    self.refused = Some(reason.clone());
                    return Err(format!("the hub refused a report: {reason}"));
                }
            }
        }
        if conn.io.overflowed() {
            return Err("the hub sent an overlong line".into());
        }
        Ok(())
    }

    /// Sends the outbox's first report if the link is up, idle, and the report is on disk.
    pub fn pump(&mut self, outbox: &[OutboxEntry], registry: &Registry) -> LinkOutcome {
        let mut outcome = LinkOutcome::default();
        let Some(conn) = self.conn.as_mut() else {
            return outcome;
        };
        if !conn.connected || self.in_flight.is_some() {
            return outcome;
        }
        if let Some(head) = outbox.first()
            && head.seq <= self.durable_seq
        {
            conn.io
                .queue(protocol::event_line(head.seq, head.kind).as_bytes());
            self.in_flight = Some(head.seq);
        }
        self.flush(registry, &mut outcome);
        outcome
    }

    fn flush(&mut self, registry: &Registry, outcome: &mut LinkOutcome) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.io.flush(registry, false) == Flushed::Done {
            conn.io.deregister(registry);
            outcome.retry_in = Some(self.lost("writing to the hub failed"));
        }
    }

    /// For `sitectl status`.
    pub fn status(&self, outbox_len: usize) -> site_proto::LinkStatus {
        site_proto::LinkStatus {
            hub: self.addr.to_string(),
            name: self.name.clone(),
            connected: self.is_connected(),
            outbox: outbox_len,
            refused: self.refused.clone(),
        }
    }
}
