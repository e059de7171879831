//! A site module's link to its hub (this daemon's own, or another node's): a TCP client that
//! proves its key first (`CHAL`, then `AUTH <name> <mac>`; PROTOCOL.md), then
//! registers (`DEVICE <name> TYPE <type> EPOCH <epoch>`, the epoch its reports are numbered
//! in), then sends the module's outbox one report at a time
//! (`EVENT <seq> <KIND>`) and drops each only on `OK <seq>`. It reconnects with backoff. The
//! outbox lives in the state file, and a report is sent only once it is on disk, so a report
//! made while the hub is down is delivered when it is back, and the hub's duplicate check makes
//! it count exactly once.

use super::protocol;
use crate::config::HubTarget;
use crate::conn_io::{ByteStream, Chunk, Flushed, LineConn};
use crate::keys::{self, Secret};
use crate::rate_limit::escape;
use crate::store::OutboxEntry;
use crate::tls::{Stream, TlsStream};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// After the hub refused the key (or the registration), the next try waits at least this long:
/// a wrong secret needs a person. More than half the hub's 60 s window apart, each link fails
/// at most twice in any 60 s, so a node's two links (access and emergency) stay under the 5
/// failures that would get the node's address shut out for a minute, fix or no fix.
const AUTH_RETRY: Duration = Duration::from_secs(31);
/// A link has at most one report in flight, so its output is one line; this only bounds
/// what a misbehaving hub could make it hold.
const BACKPRESSURE_BYTES: usize = 64 * 1024;

struct Conn {
    io: LineConn<Stream>,
    phase: Phase,
}

/// Where a connection is on its way to sending reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The TCP connect has not finished.
    Connecting,
    /// `CHAL` sent; waiting for the nonce.
    Challenged,
    /// `AUTH` and `DEVICE` sent; waiting for `OK AUTH`.
    Authenticating,
    /// Registered: reports may go.
    Ready,
}

/// The key a link proves itself with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkKey {
    pub name: String,
    pub secret: Secret,
}

/// Everything a link is made from; a reload that changes none of it keeps the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    /// The registration name; unique per site.
    pub name: String,
    pub kind: &'static str,
    pub target: HubTarget,
    /// None: the hub takes the node without a key (a loopback hub with `anonymous-role =
    /// "node"`).
    pub key: Option<LinkKey>,
    /// How often it pings the hub (`[link] heartbeat-secs`); none for this daemon's own hub,
    /// which cannot freeze apart from it.
    pub heartbeat: Option<Duration>,
}

/// Heartbeats unanswered before the link counts as lost.
pub const HEARTBEAT_MISSES: u32 = 3;

/// Seconds as a person writes them: `15`, `1.5`.
fn seconds(d: Duration) -> String {
    let text = format!("{:.2}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn register_line(spec: &LinkSpec, epoch: &str) -> String {
    protocol::register_line(&spec.name, spec.kind, Some(epoch))
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
    pub spec: LinkSpec,
    /// The node's report epoch (see `hub::sequence`).
    epoch: String,
    addr: SocketAddr,
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
    /// The hub has just refused the key or the registration (see [`AUTH_RETRY`]).
    key_refused: bool,
    /// When the hub last said anything on this connection (or the connection began).
    heard: Instant,
    /// The `PING` waiting for its `PONG`: its token and when it went.
    ping: Option<(u64, Instant)>,
    /// When the last `PING` went (one a heartbeat, however often the silence is checked).
    last_ping: Option<Instant>,
    next_token: u64,
    /// The last `PING` → `PONG` round trip.
    rtt: Option<Duration>,
}

impl HubLink {
    pub fn new(module: &'static str, spec: LinkSpec, epoch: String, token: Token) -> Self {
        HubLink {
            module,
            addr: spec.target.addr(),
            spec,
            epoch,
            token,
            conn: None,
            in_flight: None,
            durable_seq: 0,
            backoff: FIRST_RETRY,
            reported_down: false,
            refused: None,
            key_refused: false,
            heard: Instant::now(),
            ping: None,
            last_ping: None,
            next_token: 0,
            rtt: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.phase == Phase::Ready)
    }

    /// Entries up to `seq` are persisted and may go out.
    pub fn set_durable(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// Starts a connection attempt (non-blocking).
    pub fn connect(&mut self, registry: &Registry) -> Result<(), Duration> {
        self.conn = None;
        self.in_flight = None;
        self.heard = Instant::now();
        self.ping = None;
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
                let stream = match &self.spec.target {
                    HubTarget::Plain(_) => Stream::Plain(stream),
                    HubTarget::Tls {
                        host, fingerprint, ..
                    } => {
                        let config = crate::tls::client_config(*fingerprint);
                        match TlsStream::client(stream, config, host) {
                            Ok(tls) => Stream::Tls(Box::new(tls)),
                            Err(e) => return Err(self.lost(&format!("TLS: {e}"))),
                        }
                    }
                };
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
                    phase: Phase::Connecting,
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
                "{}: no link to the hub at {} ({why}); reports wait in the outbox",
                self.module,
                self.spec.target
            );
            self.reported_down = true;
        }
        self.conn = None;
        self.in_flight = None;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        if std::mem::take(&mut self.key_refused) {
            return wait.max(AUTH_RETRY);
        }
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
        if conn.phase == Phase::Connecting {
            let tcp = conn.io.stream().tcp();
            match (tcp.take_error(), tcp.peer_addr()) {
                (Ok(None), Ok(_)) => match &self.spec.key {
                    Some(_) => {
                        conn.phase = Phase::Challenged;
                        conn.io.queue(b"CHAL\n");
                    }
                    None => {
                        conn.phase = Phase::Ready;
                        conn.io
                            .queue(register_line(&self.spec, &self.epoch).as_bytes());
                        self.up("without a key");
                    }
                },
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
                Chunk::Eof => {
                    // A TLS failure (the certificate is not the pinned one) says why.
                    return Err(conn
                        .io
                        .stream()
                        .failure()
                        .unwrap_or_else(|| "the hub closed the connection".into()));
                }
            }
            self.take_replies(outcome)?;
        }
    }

    /// The link is up: said once, and the backoff starts again from the first step.
    fn up(&mut self, how: &str) {
        log::info!(
            "{}: connected to the hub at {} as {} ({how})",
            self.module,
            self.spec.target,
            self.spec.name
        );
        self.reported_down = false;
        self.backoff = FIRST_RETRY;
    }

    /// Acts on the hub's complete reply lines.
    fn take_replies(&mut self, outcome: &mut LinkOutcome) -> Result<(), String> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            let Some(raw) = conn.io.next_line() else {
                break;
            };
            let Ok(raw) = raw else {
                return Err("the hub sent an overlong line".into());
            };
            let line = String::from_utf8_lossy(&raw).to_string();
            let line = line.trim_end_matches('\r');
            self.heard = Instant::now();
            if let Some(token) = line.strip_prefix("PONG ") {
                if let Some((sent, at)) = self.ping
                    && token == sent.to_string()
                {
                    self.rtt = Some(at.elapsed());
                    self.ping = None;
                }
                continue;
            }
            match conn.phase {
                Phase::Connecting => {}
                Phase::Challenged => {
                    let nonce = line
                        .strip_prefix("CHAL ")
                        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| {
                            format!(
                                "it answered CHAL with {:?}",
                                crate::rate_limit::escape(line)
                            )
                        })?;
                    if let Some(key) = &self.spec.key {
                        let mac = keys::auth_mac(&key.secret, &key.name, nonce);
                        conn.io
                            .queue(format!("AUTH {} {mac}\n", key.name).as_bytes());
                        conn.phase = Phase::Authenticating;
                        // Taken after AUTH: the hub handles lines in order.
                        conn.io
                            .queue(register_line(&self.spec, &self.epoch).as_bytes());
                    }
                }
                Phase::Authenticating => match line.strip_prefix("OK AUTH ") {
                    Some(role) => {
                        conn.phase = Phase::Ready;
                        let how = format!("key {}, role {}", self.key_name(), escape(role));
                        self.up(&how);
                    }
                    None => {
                        self.key_refused = true;
                        return Err(format!(
                            "it refused key {} ({}): check [link] secret-file against `sitectl key list` on the hub",
                            self.key_name(),
                            escape(line)
                        ));
                    }
                },
                Phase::Ready => self.take_reply(line, outcome)?,
            }
        }
        if self.conn.as_ref().is_some_and(|c| c.io.overflowed()) {
            return Err("the hub sent an overlong line".into());
        }
        Ok(())
    }

    fn key_name(&self) -> &str {
        self.spec.key.as_ref().map_or("", |k| k.name.as_str())
    }

    /// A registered link's reply: `OK <seq>` for the report in flight, or a refusal.
    fn take_reply(&mut self, line: &str, outcome: &mut LinkOutcome) -> Result<(), String> {
        {
            match protocol::parse_reply(line) {
                Ok(seq) if Some(seq) == self.in_flight => {
                    outcome.acked.push(seq);
                    self.in_flight = None;
                    self.refused = None;
                }
                Ok(seq) => log::debug!("{}: stray OK {seq} from the hub", self.module),
                Err(reason) => {
                    // The report stays in the outbox; the link reconnects with backoff and
                    // tries again (a hub restored from an old backup, say, needs a person).
                    let mut reason = crate::rate_limit::escape(&reason).into_owned();
                    if reason == protocol::FORBIDDEN {
                        // The key's role or name does not allow this module (or its
                        // registration): that needs a person, so no quick retries.
                        self.key_refused = true;
                        reason.push_str(
                            " (the key's role or name does not allow this module: see `sitectl key list` on the hub and [link] name)",
                        );
                    }
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
        Ok(())
    }

    /// Sends the outbox's first report if the link is up, idle, and the report is on disk.
    pub fn pump(&mut self, outbox: &[OutboxEntry], registry: &Registry) -> LinkOutcome {
        let mut outcome = LinkOutcome::default();
        let Some(conn) = self.conn.as_mut() else {
            return outcome;
        };
        if conn.phase != Phase::Ready || self.in_flight.is_some() {
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

    /// How often the link pings its hub, if it does.
    pub fn heartbeat_every(&self) -> Option<Duration> {
        self.spec.heartbeat
    }

    /// The heartbeat's turn: a connection the hub has not answered for [`HEARTBEAT_MISSES`]
    /// heartbeats (a frozen hub keeps its sockets open) is dropped and retried with the
    /// backoff, the reports waiting in the outbox as in any outage; otherwise a registered
    /// link sends `PING <token>`.
    pub fn heartbeat(&mut self, registry: &Registry) -> LinkOutcome {
        let mut outcome = LinkOutcome::default();
        let Some(every) = self.spec.heartbeat else {
            return outcome;
        };
        let Some(conn) = self.conn.as_mut() else {
            return outcome;
        };
        let limit = every * HEARTBEAT_MISSES;
        if self.heard.elapsed() >= limit {
            log::warn!(
                "{}: hub link lost (no answer for {} s)",
                self.module,
                seconds(limit)
            );
            conn.io.deregister(registry);
            outcome.retry_in = Some(self.lost("no answer to its heartbeats"));
            return outcome;
        }
        // A check made early for the silence deadline sends no extra ping.
        let due = self
            .last_ping
            .is_none_or(|at| at.elapsed() >= every.mul_f64(0.9));
        if conn.phase == Phase::Ready && self.ping.is_none() && due {
            self.next_token += 1;
            conn.io
                .queue(format!("PING {}\n", self.next_token).as_bytes());
            let now = Instant::now();
            self.ping = Some((self.next_token, now));
            self.last_ping = Some(now);
            self.flush(registry, &mut outcome);
        }
        outcome
    }

    /// When the heartbeat should next look: a heartbeat from now, or sooner if that is when
    /// the hub will have been silent [`HEARTBEAT_MISSES`] heartbeats, so that a frozen hub is
    /// noticed then and not up to a heartbeat later.
    pub fn next_heartbeat(&self) -> Option<Duration> {
        let every = self.spec.heartbeat?;
        if self.conn.is_none() {
            // Between connections, the retry timer does the work.
            return Some(every);
        }
        let silent_at =
            (self.heard + every * HEARTBEAT_MISSES).saturating_duration_since(Instant::now());
        Some(every.min(silent_at.max(Duration::from_millis(1))))
    }

    /// For `sitectl status`.
    pub fn status(&self, outbox_len: usize) -> site_proto::LinkStatus {
        site_proto::LinkStatus {
            hub: self.spec.target.to_string(),
            name: self.spec.name.clone(),
            connected: self.is_connected(),
            outbox: outbox_len,
            refused: self.refused.clone(),
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1e3),
        }
    }
}
