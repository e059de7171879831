//! The hub's TCP listener and its client connections (DESIGN.md §8). This file does the socket
//! work: accepting, framing lines, registering clients and logging who connects; what a report
//! means (the staff counter, the event log) is decided by the loop, which answers `OK` once the
//! change is on disk. A bad line gets `ERR <reason>` and never takes the daemon down.
//!
//! Anyone who can reach the port is a stranger until proven otherwise: each connection reads
//! a bounded amount per wake-up (the loop comes back for the rest), each address holds a
//! bounded number of connections, and everything a client can make the hub log is
//! rate-limited and has its control characters escaped.

use super::device_log::DeviceLog;
use super::protocol::{self, Line};
use crate::conn_io::{ByteStream, Chunk, Flushed, LineConn, Overlong, TokenRange};
use crate::keys::{self, Key, KeySet, Role};
use crate::rate_limit::{RateLimit, escape};
use crate::site::Report;
use crate::tls::{HubCert, Stream, TlsStream};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Dead peers (a device unplugged mid-connection) are found by TCP keepalive, which sends no
/// application data, so seed devices that sit silent waiting for commands are unaffected: the
/// first probe after this long without traffic, then every [`KEEPALIVE_INTERVAL`], and the
/// connection is dropped after [`KEEPALIVE_PROBES`] unanswered ones (about two minutes).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_PROBES: u32 = 6;
/// How long an unterminated message must stay quiet before it counts as a line (seed 001
/// clients end nothing with a newline; each of their messages is one `send()`).
pub const QUIET: Duration = Duration::from_millis(100);
/// A connection that has not registered within this long is closed.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from one connection per wake-up; the loop comes back for the rest after the
/// other sources and due timers have had their turn (DESIGN.md §4). It reads them
/// [`READ_CHUNK_BYTES`] at a time, looking at the edges in between.
pub const READ_BUDGET_BYTES: usize = 64 * 1024;
pub const READ_CHUNK_BYTES: usize = 4 * 1024;
/// Connections accepted per wake-up (the same reasoning), [`ACCEPT_CHUNK`] at a time with
/// the edges looked at in between (an accept is a handful of system calls).
pub const ACCEPT_BUDGET: usize = 256;
pub const ACCEPT_CHUNK: usize = 16;
/// A connection is not read while more than this waits to go out to it: a client that sends
/// and never reads the answers stalls only itself, and holds at most this much of sited's
/// memory (plus one read's worth of answers).
pub const OUTPUT_BACKPRESSURE_BYTES: usize = 64 * 1024;
/// Nor while this many of its reports wait for the disk before they can be answered.
pub const MAX_AWAITING_REPORTS: u32 = 32;
/// A client that has sent a `PING` is dropped after this many silent `[hub] heartbeat-secs`.
pub const HEARTBEAT_MISSES: u32 = 3;
/// This many failed `AUTH`s from one address within [`AUTH_WINDOW`] ...
pub const AUTH_FAILURES: usize = 5;
pub const AUTH_WINDOW: Duration = Duration::from_secs(60);
/// ... and that address may not try again for this long.
pub const AUTH_BLOCK: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered, at most (a flood from many addresses cannot grow
/// the table without bound; the blocked ones are kept first).
pub const AUTH_TRACKED: usize = 4096;

/// A registered client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub kind: String,
}

impl Client {
    /// "access control client door-1" for the site's own module types, as seed 000 asks.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            protocol::TYPE_ACCESS => format!("access control client {}", self.name),
            protocol::TYPE_EMERGENCY => format!("emergency exit client {}", self.name),
            other => format!("device {} ({other})", self.name),
        }
    }
}

struct Conn {
    /// The socket (plain or TLS), its framing and its output (`conn_io`).
    io: LineConn<Stream>,
    peer: SocketAddr,
    /// The peer is this machine (loopback, or our own address): a node key may
    /// authenticate over plain TCP only from here.
    local: bool,
    /// The key the client proved it holds (`CHAL`/`AUTH`), if it did.
    key: Option<Key>,
    /// What the client may do without a key on this listener.
    anonymous: Option<Role>,
    /// The nonce of the client's last `CHAL`, until its `AUTH` uses it up.
    challenge: Option<String>,
    /// It has sent a `PING`: it is dropped once silent for [`HEARTBEAT_MISSES`] heartbeats.
    pinged: bool,
    /// When it last sent anything.
    heard: Instant,
    /// Bumped per accepted connection so a late `OK` never reaches a successor in the slot.
    generation: u64,
    since: Instant,
    client: Option<Client>,
    /// The report epoch the client registered with, if it is a site module that sent one.
    epoch: Option<String>,
    /// Commands are framed as the device framed its registration: with a newline if it sent
    /// one, as bare text (one `send()` per message, seed 001's way) if it did not.
    newline: bool,
    /// When the unterminated input last grew: seed clients send each message as one `send()`
    /// without a newline, so input that stays unterminated for [`QUIET`] is taken as a line.
    partial_since: Option<Instant>,
    /// When the last message came, for `sitectl devices` (formatted only when asked).
    last_seen: std::time::SystemTime,
    /// Operator commands waiting their turn, and the one waiting for its answer.
    commands: VecDeque<Command>,
    in_flight: Option<Command>,
    /// Answers still owed to commands that timed out: dropped when they come.
    late_answers: u32,
    /// A seed 002 peer: it sends JSON readings and never registers, so it is not swept.
    sends_readings: bool,
    /// Reports handed to the ledger and not answered yet: the connection stays open (even
    /// after the peer's end of input) until they are.
    awaiting: u32,
    /// Reading stopped for backpressure; the loop is told when it may go on.
    paused: bool,
    /// Errors for lines that came after reports still waiting for the disk, each with how
    /// many of those answers must go out first, and their bytes in all (they count against
    /// the backpressure limit like output does).
    deferred: VecDeque<(u32, Vec<u8>)>,
    deferred_bytes: usize,
}

impl Conn {
    /// What the client may do: its key's role, or the listener's for clients without one.
    fn role(&self) -> Option<Role> {
        self.key.as_ref().map(|k| k.role).or(self.anonymous)
    }

    /// "key front (node)", "no key (actuator)": who the client is, for the log.
    fn who(&self) -> String {
        match (&self.key, self.anonymous) {
            (Some(k), _) => format!("key {} ({})", k.name, k.role),
            (None, Some(role)) => format!("no key ({role})"),
            (None, None) => "no key".to_string(),
        }
    }

    /// Too much waits to go out to this peer, or too many of its reports wait for the disk:
    /// read no more from it for now.
    fn backed_up(&self) -> bool {
        self.io.backed_up(self.deferred_bytes) || self.awaiting >= MAX_AWAITING_REPORTS
    }
}

/// A report a client sent, for the loop to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingReport {
    pub conn: ConnRef,
    pub client: String,
    pub epoch: Epoch,
    pub seq: u64,
    pub report: Report,
}

/// What reading a connection produced.
#[derive(Debug, Default)]
pub struct Readable {
    /// The reports it carried, in order.
    pub reports: Vec<IncomingReport>,
    /// The read budget ran out with more waiting: the loop must come back.
    pub more: bool,
}

/// The hub's answer to one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK <seq>`: counted (now or before), and on disk.
    Ok(u64),
    /// `ERR <reason>`: refused (out of sequence).
    Err(String),
}

/// Where a report's number belongs: the epoch its node registered with, or, for a client
/// that gave none (hand-written, older), the connection it came on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Epoch {
    Node(String),
    Connection(ConnRef),
}

/// A connection slot and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub index: usize,
    pub generation: u64,
}

pub use site_proto::ClientStatus;

/// Who asked for a command: a control connection and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asker {
    pub conn: usize,
    pub generation: u64,
}

#[derive(Debug)]
struct Command {
    id: u64,
    text: String,
    timeout: Duration,
    asker: Asker,
}

/// How an operator command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandDone {
    Reply {
        asker: Asker,
        device: String,
        reply: String,
    },
    Failed {
        asker: Asker,
        reason: String,
    },
    Closed {
        asker: Asker,
        device: String,
    },
}

/// What handling lines produced.
#[derive(Default)]
struct LineEffects {
    reports: Vec<IncomingReport>,
    readings: Vec<super::stream::Reading>,
    done: Vec<CommandDone>,
    registered: Option<String>,
    /// Lines for the device log (kept only if there is one).
    notes: Vec<String>,
}

pub struct HubServer {
    listener: TcpListener,
    addr: SocketAddr,
    /// The connections, each in the slot its token names.
    conns: Slab<Conn>,
    tokens: TokenRange,
    /// Registered names and their connection: a command finds its device without a scan.
    /// Registered clients by name, sorted: `devices` pages through them.
    by_name: BTreeMap<String, usize>,
    /// More connections than this are turned away with `ERR too many clients`.
    max_clients: usize,
    /// More connections than this from one address are turned away.
    max_per_address: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Connections closed since the loop last looked (their per-connection epochs end).
    closed: Vec<ConnRef>,
    /// Paused connections that may be read again (their answers went out).
    resumed: Vec<usize>,
    /// A descriptor held in reserve: when the process runs out (EMFILE), it is closed to
    /// accept the waiting connection and turn it away, so the backlog does not stall.
    spare_fd: Option<std::fs::File>,
    next_generation: u64,
    next_command: u64,
    readings: Vec<super::stream::Reading>,
    started: Vec<(usize, u64, Duration)>,
    done: Vec<CommandDone>,
    /// The budgets of the lines any client can cause (see [`LogLimits`]).
    limits: LogLimits,
    /// `[hub] device-log`, if set.
    device_log: Option<DeviceLog>,
    /// The TLS listener (`[hub] tls`), if any.
    tls: Option<TlsListener>,
    /// The keys clients authenticate with.
    keys: KeySet,
    /// What clients without a key may do on this (plain) listener.
    anonymous: Option<Role>,
    failures: AuthFailures,
    /// Registered names held by clients with a key, and that key's name: nobody else may
    /// take them over.
    keyed_names: HashMap<String, String>,
    /// `[hub] heartbeat-secs`.
    heartbeat: Duration,
    /// Connections that have sent a `PING` (and so are watched for silence).
    pinging: usize,
}

struct TlsListener {
    listener: TcpListener,
    addr: SocketAddr,
    cert: HubCert,
}

/// Failed `AUTH`s by address: after [`AUTH_FAILURES`] within [`AUTH_WINDOW`], that address
/// is refused for [`AUTH_BLOCK`].
#[derive(Default)]
struct AuthFailures {
    by_ip: HashMap<IpAddr, Failures>,
}

#[derive(Default)]
struct Failures {
    recent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl AuthFailures {
    /// How much longer `ip` is refused, if it is.
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.by_ip.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure; true if it makes `ip` refused from now on.
    fn record(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.by_ip.len() >= AUTH_TRACKED && !self.by_ip.contains_key(&ip) {
            self.by_ip.retain(|_, f| {
                f.blocked_until.is_some_and(|t| t > now)
                    || f.recent.back().is_some_and(|t| now - *t < AUTH_WINDOW)
            });
            if self.by_ip.len() >= AUTH_TRACKED {
                self.by_ip
                    .retain(|_, f| f.blocked_until.is_some_and(|t| t > now));
            }
        }
        let f = self.by_ip.entry(ip).or_default();
        while f.recent.front().is_some_and(|t| now - *t >= AUTH_WINDOW) {
            f.recent.pop_front();
        }
        f.recent.push_back(now);
        if f.recent.len() >= AUTH_FAILURES {
            f.recent.clear();
            f.blocked_until = Some(now + AUTH_BLOCK);
            return true;
        }
        false
    }
}

/// What a client without a key may do: nothing on the TLS port; on the plain port what
/// `anonymous-role` says, but `node` only from this machine (after `AUTH` or without it,
/// anyone on the path could take a plain connection from elsewhere over), `actuator` from
/// elsewhere.
fn anonymous_role(configured: Option<Role>, tls: bool, local: bool) -> Option<Role> {
    match configured {
        _ if tls => None,
        Some(Role::Node) if !local => Some(Role::Actuator),
        role => role,
    }
}

/// What handling a line may look at besides its own connection.
struct Gate<'a> {
    limits: &'a mut LogLimits,
    keys: &'a KeySet,
    failures: &'a mut AuthFailures,
    keyed_names: &'a HashMap<String, String>,
    pinging: &'a mut usize,
}

impl HubServer {
    /// Listens on `addr`, registered as `listener_token`; clients get the tokens of `conns`,
    /// which must hold `max_clients` of them.
    pub fn bind(
        addr: SocketAddr,
        anonymous: Option<Role>,
        max_clients: usize,
        max_per_address: usize,
        registry: &Registry,
        listener_token: Token,
        conns: TokenRange,
    ) -> io::Result<HubServer> {
        assert!(conns.len >= max_clients, "too few hub tokens");
        let mut listener = listen(addr)?;
        let addr = listener.local_addr()?;
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(HubServer {
            listener,
            addr,
            conns: Slab::new(),
            tokens: conns,
            by_name: BTreeMap::new(),
            max_clients,
            max_per_address,
            per_address: HashMap::new(),
            closed: Vec::new(),
            resumed: Vec::new(),
            spare_fd: std::fs::File::open("/dev/null").ok(),
            next_generation: 0,
            next_command: 0,
            readings: Vec::new(),
            started: Vec::new(),
            done: Vec::new(),
            limits: LogLimits::default(),
            device_log: None,
            tls: None,
            keys: KeySet::default(),
            anonymous,
            failures: AuthFailures::default(),
            keyed_names: HashMap::new(),
            heartbeat: Duration::from_secs(5),
            pinging: 0,
        })
    }

    /// `[hub] heartbeat-secs`: a client that has sent a `PING` is dropped once silent for
    /// [`HEARTBEAT_MISSES`] of these.
    pub fn set_heartbeat(&mut self, every: Duration) {
        self.heartbeat = every;
    }

    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Are there clients that have sent a `PING` (so the silence sweep is needed)?
    pub fn has_pinging(&self) -> bool {
        self.pinging > 0
    }

    /// Drops the clients that have sent a `PING` and then nothing for
    /// [`HEARTBEAT_MISSES`] heartbeats (a frozen peer, a cut cable: sooner than keepalive);
    /// returns when the next one falls silent that long, if any client is watched.
    pub fn expire_silent(&mut self, registry: &Registry) -> Option<Instant> {
        let limit = self.heartbeat * HEARTBEAT_MISSES;
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut silent = Vec::new();
        for (index, c) in &self.conns {
            if !c.pinged || c.io.is_closing() {
                continue;
            }
            let due = c.heard + limit;
            if due <= now {
                silent.push(index);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        for index in silent {
            if let Some(c) = self.conns.get(index) {
                crate::info_limited!(
                    self.limits.info,
                    "hub: dropped {} ({}): silent for {:.1} s after its PINGs",
                    c.peer,
                    c.client
                        .as_ref()
                        .map_or("not registered".to_string(), Client::describe),
                    c.heard.elapsed().as_secs_f64()
                );
            }
            self.close(index, registry);
        }
        next
    }

    /// Adds the TLS listener on `addr`, registered as `token`: the same protocol, but
    /// clients without a key may do nothing there.
    pub fn listen_tls(
        &mut self,
        addr: SocketAddr,
        cert: HubCert,
        registry: &Registry,
        token: Token,
    ) -> io::Result<SocketAddr> {
        let mut listener = listen(addr)?;
        let addr = listener.local_addr()?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        self.tls = Some(TlsListener {
            listener,
            addr,
            cert,
        });
        Ok(addr)
    }

    /// The TLS listener's address and certificate, if there is one.
    pub fn tls(&self) -> Option<(SocketAddr, &HubCert)> {
        self.tls.as_ref().map(|t| (t.addr, &t.cert))
    }

    /// The keys clients authenticate with from now on. Connections whose key was removed or
    /// changed are dropped, and so are clients without a key that hold a name a new key owns.
    pub fn set_keys(&mut self, keys: KeySet, registry: &Registry) -> usize {
        self.keys = keys;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| match &c.key {
                Some(key) => self.keys.get(&key.name) != Some(key),
                None => c
                    .client
                    .as_ref()
                    .is_some_and(|client| self.keys.owner_of(&client.name).is_some()),
            })
            .map(|(index, _)| index)
            .collect();
        let dropped = stale.len();
        for index in stale {
            if let Some(c) = self.conns.get(index) {
                log::info!(
                    "hub: dropping the connection from {} ({}): its key was removed or changed",
                    c.peer,
                    c.who()
                );
            }
            self.close(index, registry);
        }
        dropped
    }

    /// How many connections are authenticated with each key.
    pub fn connections_by_key(&self) -> HashMap<String, usize> {
        let mut by_key = HashMap::new();
        for (_, c) in &self.conns {
            if let Some(key) = &c.key {
                *by_key.entry(key.name.clone()).or_default() += 1;
            }
        }
        by_key
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Keeps seed 001's server record (`[hub] device-log`), taken with
    /// [`HubServer::take_device_log`].
    pub fn keep_device_log(&mut self) {
        self.device_log = Some(DeviceLog::default());
    }

    /// The device-log lines since the last call.
    pub fn take_device_log(&mut self) -> Vec<String> {
        self.device_log
            .as_mut()
            .map(DeviceLog::take)
            .unwrap_or_default()
    }

    fn note(&mut self, words: impl FnOnce() -> String) {
        if let Some(log) = &mut self.device_log {
            log.note(&words());
        }
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts waiting connections, up to `budget`; true if more may be waiting.
    pub fn accept(&mut self, registry: &Registry, budget: usize, tls: bool) -> bool {
        for _ in 0..budget {
            let accepted = match (tls, &self.tls) {
                (false, _) => self.listener.accept(),
                (true, Some(t)) => t.listener.accept(),
                (true, None) => return false,
            };
            match accepted {
                Ok((mut stream, peer)) => {
                    // A TLS client could not read a plain answer: it is just closed.
                    let turn_away = |stream: &mut TcpStream, reason: &str| {
                        if !tls {
                            let _ = stream.write_all(protocol::err_line(reason).as_bytes());
                        }
                    };
                    if self.conns.len() >= self.max_clients {
                        turn_away(&mut stream, "too many clients");
                        crate::warn_limited!(
                            self.limits.warn,
                            "hub: turned away {peer}: {} clients connected (max-clients)",
                            self.conns.len()
                        );
                        continue;
                    }
                    let from_here = self.per_address.get(&peer.ip()).copied().unwrap_or(0);
                    if from_here >= self.max_per_address {
                        let reason = format!("too many clients from {}", peer.ip());
                        turn_away(&mut stream, &reason);
                        crate::warn_limited!(
                            self.limits.warn,
                            "hub: turned away {peer}: {from_here} clients connected from {} (max-clients-per-address)",
                            peer.ip()
                        );
                        continue;
                    }
                    // max-clients keeps the table within the token range.
                    let slot = self.conns.vacant_entry();
                    let token = self.tokens.token(slot.key());
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        crate::warn_limited!(
                            self.limits.warn,
                            "hub: could not register a connection from {peer}: {e}"
                        );
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    keepalive(&stream);
                    let local = peer.ip().is_loopback()
                        || stream.local_addr().is_ok_and(|at| at.ip() == peer.ip());
                    let stream = match &self.tls {
                        Some(t) if tls => match TlsStream::server(stream, t.cert.config.clone()) {
                            Ok(s) => Stream::Tls(Box::new(s)),
                            Err(e) => {
                                crate::warn_limited!(
                                    self.limits.warn,
                                    "hub: could not start TLS with {peer}: {e}"
                                );
                                continue;
                            }
                        },
                        _ => Stream::Plain(stream),
                    };
                    *self.per_address.entry(peer.ip()).or_default() += 1;
                    self.next_generation += 1;
                    crate::info_limited!(
                        self.limits.info,
                        "hub: connection from {peer}{}",
                        if tls { " (tls)" } else { "" }
                    );
                    slot.insert(Conn {
                        io: LineConn::new(
                            stream,
                            token,
                            protocol::MAX_LINE_BYTES,
                            OUTPUT_BACKPRESSURE_BYTES,
                            false,
                        ),
                        peer,
                        local,
                        key: None,
                        anonymous: anonymous_role(self.anonymous, tls, local),
                        challenge: None,
                        pinged: false,
                        heard: Instant::now(),
                        generation: self.next_generation,
                        since: Instant::now(),
                        last_seen: std::time::SystemTime::now(),
                        commands: VecDeque::new(),
                        in_flight: None,
                        late_answers: 0,
                        sends_readings: false,
                        client: None,
                        epoch: None,
                        newline: true,
                        partial_since: None,
                        awaiting: 0,
                        paused: false,
                        deferred: VecDeque::new(),
                        deferred_bytes: 0,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: use the spare to take the connection off the backlog
                    // and turn it away (edge-triggered: left there, it would never be seen
                    // again), then take the spare back.
                    crate::warn_limited!(
                        self.limits.warn,
                        "hub: out of file descriptors with {} clients ({e}); turning connections away (raise LimitNOFILE or lower max-clients)",
                        self.conns.len()
                    );
                    if self.spare_fd.take().is_none() {
                        return false;
                    }
                    let spare = match (tls, &self.tls) {
                        (true, Some(t)) => t.listener.accept(),
                        _ => self.listener.accept(),
                    };
                    if let Ok((mut stream, _)) = spare
                        && !tls
                    {
                        let _ = stream.write_all(protocol::err_line("too many clients").as_bytes());
                    }
                    self.spare_fd = std::fs::File::open("/dev/null").ok();
                }
                Err(e) => {
                    crate::warn_limited!(self.limits.warn, "hub: accept failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The connection table, and beside it what handling a line may look at.
    fn gate(&mut self) -> (&mut Slab<Conn>, Gate<'_>) {
        (
            &mut self.conns,
            Gate {
                limits: &mut self.limits,
                keys: &self.keys,
                failures: &mut self.failures,
                keyed_names: &self.keyed_names,
                pinging: &mut self.pinging,
            },
        )
    }

    /// Reads what a connection sent, up to `budget` bytes, handling each line as it
    /// completes; returns the reports it carried, in order, and whether more is waiting.
    pub fn readable(&mut self, index: usize, registry: &Registry, budget: usize) -> Readable {
        let mut fx = LineEffects::default();
        let (conns, mut gate) = self.gate();
        let Some(conn) = conns.get_mut(index) else {
            return Readable::default();
        };
        if conn.io.is_discarding() {
            while let Chunk::Got(_) = conn.io.read_chunk() {}
            self.flush(index, registry);
            return Readable::default();
        }
        let mut more = false;
        let mut budget = budget;
        while !conn.io.is_closing() {
            if conn.backed_up() {
                conn.paused = true;
                break;
            }
            if budget == 0 {
                more = true;
                break;
            }
            let n = match conn.io.read_chunk() {
                Chunk::Got(n) => n,
                Chunk::Empty => break,
                Chunk::Eof => {
                    if let Some(why) = conn.io.stream().failure() {
                        crate::warn_limited!(
                            gate.limits.warn,
                            "hub: TLS with {} failed: {why}",
                            conn.peer
                        );
                    }
                    conn.io.close_when_drained();
                    break;
                }
            };
            budget = budget.saturating_sub(n);
            conn.heard = Instant::now();
            while let Some(line) = conn.io.next_line() {
                match line {
                    Ok(raw) => handle_line(conn, &mut gate, index, &raw, true, &mut fx),
                    Err(Overlong) => {
                        conn.last_seen = std::time::SystemTime::now();
                        bad_line(conn, &mut gate.limits.warn, "line too long");
                    }
                }
                if conn.io.is_closing() {
                    // A failed AUTH: nothing after it is taken.
                    break;
                }
            }
            if conn.io.overflowed() {
                bad_line(conn, &mut gate.limits.warn, "line too long");
                conn.io.discard_input();
                break;
            }
        }
        // A peer that closed after an unterminated message still meant it.
        if conn.io.is_closing() && !conn.io.is_discarding() && conn.io.pending() > 0 {
            let raw = conn.io.take_partial();
            handle_line(conn, &mut gate, index, &raw, false, &mut fx);
        }
        // Unterminated input counts as a line once quiet, but only if the peer has really
        // stopped sending: not while its data waits in the socket for our next turn.
        conn.partial_since = (conn.io.pending() > 0 && !conn.paused && !more).then(Instant::now);
        Readable {
            reports: self.after_lines(index, fx, registry),
            more,
        }
    }

    /// What every batch of lines leads to: a name registered again replaces its old connection,
    /// answered commands are done, the next queued command goes out, output is flushed.
    fn after_lines(
        &mut self,
        index: usize,
        fx: LineEffects,
        registry: &Registry,
    ) -> Vec<IncomingReport> {
        if let Some(name) = fx.registered {
            if let Some(&old) = self.by_name.get(&name)
                && old != index
            {
                crate::warn_limited!(
                    self.limits.warn,
                    "hub: {name} registered again; the new connection replaces the old one"
                );
                self.close(old, registry);
            }
            match self.conns.get(index).and_then(|c| c.key.as_ref()) {
                Some(key) => self.keyed_names.insert(name.clone(), key.name.clone()),
                None => self.keyed_names.remove(&name),
            };
            self.by_name.insert(name, index);
        }
        if let Some(log) = &mut self.device_log {
            for words in &fx.notes {
                log.note(words);
            }
        }
        self.done.extend(fx.done);
        self.readings.extend(fx.readings);
        self.start_next(index);
        self.flush(index, registry);
        fx.reports
    }

    /// Takes unterminated input that has been quiet for [`QUIET`] as a line.
    pub fn quiet(&mut self, index: usize, registry: &Registry) -> Vec<IncomingReport> {
        let mut fx = LineEffects::default();
        let (conns, mut gate) = self.gate();
        let Some(conn) = conns.get_mut(index) else {
            return Vec::new();
        };
        if conn.partial_since.is_some_and(|at| at.elapsed() >= QUIET) {
            let raw = conn.io.take_partial();
            conn.partial_since = None;
            handle_line(conn, &mut gate, index, &raw, false, &mut fx);
        }
        self.after_lines(index, fx, registry)
    }

    /// An operator command for the device registered as `device` (`sitectl send`). Commands to
    /// one device go one at a time: each waits for the answer to the one before. `quit`
    /// closes the device's connection, as seed 001's operator does.
    pub fn send_command(
        &mut self,
        device: &str,
        text: &str,
        timeout: Duration,
        asker: Asker,
        registry: &Registry,
    ) -> Result<(), String> {
        // A seed device's registration counts once it has been quiet for 100 ms; a command
        // for it in the meantime waits for it rather than failing.
        let index = self
            .by_name
            .get(device)
            .copied()
            .or_else(|| self.pending_registration(device))
            .ok_or_else(|| {
                format!("no device named \"{device}\" is connected (see sitectl devices)")
            })?;
        if text.trim().eq_ignore_ascii_case("quit") {
            log::info!("hub: closing the connection with {device} at the operator's request");
            self.note(|| format!("Closing connection with {device}"));
            self.close(index, registry);
            self.done.push(CommandDone::Closed {
                asker,
                device: device.to_string(),
            });
            return Ok(());
        }
        self.next_command += 1;
        let command = Command {
            id: self.next_command,
            text: text.to_string(),
            timeout,
            asker,
        };
        if let Some(conn) = self.conns.get_mut(index) {
            conn.commands.push_back(command);
        }
        self.start_next(index);
        self.flush(index, registry);
        Ok(())
    }

    /// The connection whose unterminated input is a registration of `device` still waiting
    /// out its quiet interval, if any.
    fn pending_registration(&self, device: &str) -> Option<usize> {
        self.conns
            .iter()
            .find(|(_, c)| {
                c.client.is_none()
                    && !c.io.is_closing()
                    && c.io.pending() > 0
                    && std::str::from_utf8(c.io.partial()).is_ok_and(|text| {
                        matches!(protocol::parse(text), Ok(Line::Register { name, .. }) if name == device)
                    })
            })
            .map(|(index, _)| index)
    }

    /// Sends the device's next queued command if none is waiting for an answer.
    fn start_next(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.in_flight.is_some() || conn.client.is_none() {
            return;
        }
        let Some(command) = conn.commands.pop_front() else {
            return;
        };
        let device = conn
            .client
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        log::info!("hub: sent command to {device}: {}", escape(&command.text));
        conn.io.queue(command.text.as_bytes());
        if conn.newline {
            conn.io.queue(b"\n");
        }
        self.started.push((index, command.id, command.timeout));
        let words = format!("Sent command to {device}: {}", escape(&command.text));
        conn.in_flight = Some(command);
        self.note(|| words);
    }

    /// A command's time is up: if it is still unanswered, it fails, and the answer, should it
    /// come late, is not taken for the next command's.
    pub fn command_timeout(&mut self, index: usize, id: u64, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.in_flight.as_ref().is_some_and(|c| c.id == id) {
            let Some(command) = conn.in_flight.take() else {
                return;
            };
            let device = conn
                .client
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            crate::warn_limited!(
                self.limits.warn,
                "hub: {device} did not answer {:?} within {:?}",
                command.text,
                command.timeout
            );
            conn.late_answers += 1;
            self.done.push(CommandDone::Failed {
                asker: command.asker,
                reason: format!(
                    "{device} did not answer within {:.1} s",
                    command.timeout.as_secs_f64()
                ),
            });
            self.start_next(index);
            self.flush(index, registry);
        }
    }

    /// Commands sent since the last look: (connection, command id, timeout), for timers.
    pub fn take_started(&mut self) -> Vec<(usize, u64, Duration)> {
        std::mem::take(&mut self.started)
    }

    /// JSON readings received on TCP lines since the last look.
    pub fn take_readings(&mut self) -> Vec<super::stream::Reading> {
        std::mem::take(&mut self.readings)
    }

    /// Commands finished since the last look.
    pub fn take_done(&mut self) -> Vec<CommandDone> {
        std::mem::take(&mut self.done)
    }

    /// Connections holding unterminated input, and when it went quiet.
    pub fn partial_deadline(&self, index: usize) -> Option<Instant> {
        self.conns.get(index)?.partial_since.map(|at| at + QUIET)
    }

    /// Sends the answer to a report (`OK <seq>` or `ERR <reason>`) if the connection is
    /// still the one the report came on.
    pub fn answer(&mut self, conn: ConnRef, reply: &Reply, registry: &Registry) {
        if let Some(c) = self.conns.get_mut(conn.index)
            && c.generation == conn.generation
        {
            let line = match reply {
                Reply::Ok(seq) => protocol::ok_line(*seq),
                Reply::Err(reason) => protocol::err_line(reason),
            };
            c.io.queue(line.as_bytes());
            c.awaiting = c.awaiting.saturating_sub(1);
            for (before, _) in &mut c.deferred {
                *before = before.saturating_sub(1);
            }
            while c.deferred.front().is_some_and(|(before, _)| *before == 0) {
                if let Some((_, line)) = c.deferred.pop_front() {
                    c.deferred_bytes -= line.len();
                    c.io.queue(&line);
                }
            }
            self.flush(conn.index, registry);
        }
    }

    /// Connections closed since the last look.
    pub fn take_closed(&mut self) -> Vec<ConnRef> {
        std::mem::take(&mut self.closed)
    }

    /// Connections that stopped for backpressure and may be read again: edge-triggered, no
    /// new event would say so, so the loop serves them on its next turn.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resumed)
    }

    pub fn flush(&mut self, index: usize, registry: &Registry) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        // Reports waiting for the disk are owed an answer: the connection stays for them.
        if conn.io.flush(registry, conn.awaiting > 0) == Flushed::Done {
            self.close(index, registry);
            return;
        }
        if conn.paused && !conn.backed_up() {
            conn.paused = false;
            self.resumed.push(index);
        }
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns.try_remove(index) {
            conn.io.deregister(registry);
            if conn.pinged {
                self.pinging -= 1;
            }
            if let Some(n) = self.per_address.get_mut(&conn.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&conn.peer.ip());
                }
            }
            self.closed.push(ConnRef {
                index,
                generation: conn.generation,
            });
            let device = conn
                .client
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            if self.by_name.get(&device) == Some(&index) {
                self.by_name.remove(&device);
                self.keyed_names.remove(&device);
            }
            for command in conn
                .in_flight
                .take()
                .into_iter()
                .chain(conn.commands.drain(..))
            {
                self.done.push(CommandDone::Failed {
                    asker: command.asker,
                    reason: format!("{device} disconnected before answering"),
                });
            }
            if let Some(log) = &mut self.device_log {
                log.note(&format!("Connection to {} closed.", conn.peer));
            }
            match &conn.client {
                Some(client) => crate::info_limited!(
                    self.limits.info,
                    "hub: {} disconnected ({})",
                    client.describe(),
                    conn.peer
                ),
                None => crate::info_limited!(
                    self.limits.info,
                    "hub: connection from {} closed",
                    conn.peer
                ),
            }
        }
    }

    /// Closes connections that have not registered within [`REGISTER_TIMEOUT`]; returns when
    /// the next one is due (for the loop's timer), if any is waiting.
    pub fn expire_unregistered(&mut self, registry: &Registry) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (index, conn) in &self.conns {
            if conn.client.is_some() || conn.sends_readings || conn.io.is_closing() {
                continue;
            }
            let due = conn.since + REGISTER_TIMEOUT;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
            } else {
                expired.push(index);
            }
        }
        for index in expired {
            if let Some(conn) = self.conns.get_mut(index) {
                let reason = format!(
                    "no DEVICE registration within {} s; closing",
                    REGISTER_TIMEOUT.as_secs()
                );
                conn.io.queue(protocol::err_line(&reason).as_bytes());
                conn.io.close_when_drained();
            }
            self.flush(index, registry);
        }
        next
    }

    /// Are there connections that have not registered yet (so the expiry timer is needed)?
    pub fn has_unregistered(&self) -> bool {
        self.conns
            .iter()
            .any(|(_, c)| c.client.is_none() && !c.sends_readings)
    }

    /// Registered clients, by name, after `after`, at most `limit` of them: a page costs its
    /// own length, whatever the number of clients.
    pub fn clients(&self, after: Option<&str>, limit: usize) -> Vec<ClientStatus> {
        use std::ops::Bound;
        let now = Instant::now();
        let from = match after {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        self.by_name
            .range::<str, _>((from, Bound::Unbounded))
            .filter_map(|(_, &index)| {
                let c = self.conns.get(index)?;
                let client = c.client.as_ref()?;
                Some(ClientStatus {
                    name: client.name.clone(),
                    kind: client.kind.clone(),
                    key: c.key.as_ref().map(|k| k.name.clone()),
                    tls: c.io.stream().is_tls(),
                    address: c.peer.to_string(),
                    connected_secs: now.duration_since(c.since).as_secs(),
                    last_seen: super::stream::local_time(c.last_seen),
                })
            })
            .take(limit)
            .collect()
    }

    /// How many clients are registered.
    pub fn client_count(&self) -> usize {
        self.by_name.len()
    }
}

/// Now, as `sitectl devices` shows it.
/// Connections the kernel holds for us while the loop is busy elsewhere (capped by
/// `net.core.somaxconn`). Devices coming back after a power cut all connect at once; a full
/// queue drops their SYNs and costs each a retransmission of a second or more.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds the hub's listener with [`LISTEN_BACKLOG`] (std and mio use 128 and 1024).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket,
        sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // As std and mio do: a restarted daemon can bind while old connections sit in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    let backlog = Backlog::new(LISTEN_BACKLOG).map_err(io::Error::from)?;
    nix::sys::socket::listen(&fd, backlog)?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
}

/// Turns on TCP keepalive with the hub's timings (see [`KEEPALIVE_IDLE`]); best effort.
fn keepalive(stream: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let result = setsockopt(stream, sockopt::KeepAlive, &true)
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepIdle, &secs(KEEPALIVE_IDLE)))
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepInterval, &secs(KEEPALIVE_INTERVAL)))
        .and_then(|()| setsockopt(stream, sockopt::TcpKeepCount, &KEEPALIVE_PROBES));
    if let Err(e) = result {
        log::debug!("hub: keepalive not set: {e}");
    }
}

/// The hub's budgets for log lines any client can cause: warnings (bad lines, failed
/// accepts), info lines (connections, registrations, answers) and debug lines (each
/// registration as received, each hello), each its own, so a flood of one kind does not
/// silence another.
struct LogLimits {
    warn: RateLimit,
    info: RateLimit,
    debug: RateLimit,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            warn: RateLimit::new(20, Duration::from_secs(60)),
            info: RateLimit::new(60, Duration::from_secs(10)),
            debug: RateLimit::new(60, Duration::from_secs(10)),
        }
    }
}

/// Handles one line (without its newline) from a client.
fn handle_line(
    conn: &mut Conn,
    gate: &mut Gate<'_>,
    index: usize,
    raw: &[u8],
    terminated: bool,
    fx: &mut LineEffects,
) {
    let limits = &mut *gate.limits;
    conn.last_seen = std::time::SystemTime::now();
    if raw.len() > protocol::MAX_LINE_BYTES {
        bad_line(conn, &mut limits.warn, "line too long");
        return;
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        bad_line(conn, &mut limits.warn, "line is not UTF-8");
        return;
    };
    let text = text.trim_end_matches('\r');
    if text.is_empty() {
        return;
    }
    // Seed 001's server prints the raw line before it parses it; so do we, at debug level,
    // whatever the parser then makes of it.
    if conn.client.is_none() && text.starts_with("DEVICE") {
        crate::debug_limited!(
            limits.debug,
            "hub: Received registration: {} (from {})",
            escape(text),
            conn.peer
        );
    }
    // Seed 002 peers send JSON readings, registered or not.
    if text.starts_with('{') {
        if conn.role().is_none() {
            forbid(conn, &mut limits.warn, "readings need a key (CHAL, AUTH)");
            return;
        }
        if let Some(device) = super::stream::hello(text.as_bytes()) {
            // A seed 002 peer saying hello: seen, not answered, not an error.
            crate::debug_limited!(
                limits.debug,
                "hub: hello from {} at {}",
                escape(&device),
                conn.peer
            );
            conn.sends_readings = true;
            return;
        }
        match super::stream::parse(text.as_bytes()) {
            Ok(reading) => {
                // A name a key owns is that key's to send readings under.
                if let Some(owner) = gate.keys.owner_of(&reading.device)
                    && conn.key.as_ref().is_none_or(|k| k.name != owner.name)
                {
                    let why = format!("{} belongs to key {}", reading.device, owner.name);
                    forbid(conn, &mut limits.warn, &why);
                    return;
                }
                conn.sends_readings = true;
                fx.readings.push(reading);
            }
            Err(reason) => bad_line(conn, &mut limits.warn, &reason),
        }
        return;
    }
    match protocol::parse(text) {
        Ok(Line::Chal) => challenge(conn, gate),
        Ok(Line::Ping(token)) => {
            // At once, ahead of answers that wait for the disk: it says the hub is alive.
            conn.io.queue(format!("PONG {token}\n").as_bytes());
            if !conn.pinged {
                conn.pinged = true;
                *gate.pinging += 1;
            }
        }
        Ok(Line::Auth(words)) => authenticate(conn, gate, words),
        Ok(Line::Register { name, kind, epoch }) => {
            if let Some(old) = &conn.client {
                bad_line(
                    conn,
                    &mut limits.warn,
                    &format!("already registered as {}", old.name),
                );
                return;
            }
            // Site modules report events, which only nodes may.
            let module = kind == protocol::TYPE_ACCESS
                || kind == protocol::TYPE_EMERGENCY
                || epoch.is_some();
            let needs = if module { Role::Node } else { Role::Actuator };
            if conn.role() < Some(needs) {
                let why = format!("registering a {kind} DEVICE needs a key with role {needs}");
                forbid(conn, &mut limits.warn, &why);
                return;
            }
            if let Err(why) = gate.keys.may_use_name(conn.key.as_ref(), &name) {
                forbid(conn, &mut limits.warn, &why);
                return;
            }
            if let Some(holder) = gate.keyed_names.get(&name)
                && conn.key.as_ref().is_none_or(|k| &k.name != holder)
            {
                let why = format!("{name} is connected with key {holder}");
                forbid(conn, &mut limits.warn, &why);
                return;
            }
            let client = Client { name, kind };
            // Seed 001's server line, with where it came from; modules named as such (seed 000).
            let role = match client.kind.as_str() {
                protocol::TYPE_ACCESS | protocol::TYPE_EMERGENCY => {
                    format!(" ({})", client.describe())
                }
                _ => String::new(),
            };
            crate::info_limited!(
                limits.info,
                "hub: registered DEVICE={} TYPE={} from {}{role}",
                client.name,
                client.kind,
                conn.peer
            );
            fx.notes.push(format!(
                "Registered DEVICE={} TYPE={}",
                client.name,
                escape(&client.kind)
            ));
            fx.registered = Some(client.name.clone());
            conn.client = Some(client);
            conn.epoch = epoch;
            conn.newline = terminated;
        }
        Ok(Line::Event { .. }) if conn.role() < Some(Role::Node) => {
            forbid(
                conn,
                &mut limits.warn,
                "site events need a key with role node",
            );
        }
        Ok(Line::Event { seq, report }) => match &conn.client {
            None => bad_line(
                conn,
                &mut limits.warn,
                "register first: DEVICE <name> TYPE <type>",
            ),
            Some(client) if !protocol::type_may_report(&client.kind, report) => {
                let reason = format!("a {} client may not report {}", client.kind, report.wire());
                bad_line(conn, &mut limits.warn, &reason);
            }
            Some(client) => {
                let here = ConnRef {
                    index,
                    generation: conn.generation,
                };
                conn.awaiting += 1;
                fx.reports.push(IncomingReport {
                    conn: here,
                    client: client.name.clone(),
                    epoch: match &conn.epoch {
                        Some(e) => Epoch::Node(e.clone()),
                        None => Epoch::Connection(here),
                    },
                    seq,
                    report,
                })
            }
        },
        Ok(Line::Other(text)) => match &conn.client {
            None => bad_line(
                conn,
                &mut limits.warn,
                "register first: DEVICE <name> TYPE <type>",
            ),
            Some(client) => {
                let device = client.name.clone();
                // An answer, late or not, and an unasked-for ACK are all the seed's ACK line.
                if conn.in_flight.is_some() || conn.late_answers > 0 || text.starts_with("ACK") {
                    fx.notes
                        .push(format!("Received ACK from {device}: {}", escape(&text)));
                }
                if let Some(command) = conn.in_flight.take() {
                    crate::info_limited!(
                        limits.info,
                        "hub: {device} answered {:?}: {}",
                        command.text,
                        escape(&text)
                    );
                    fx.done.push(CommandDone::Reply {
                        asker: command.asker,
                        device,
                        reply: text,
                    });
                } else if conn.late_answers > 0 {
                    conn.late_answers -= 1;
                    crate::warn_limited!(
                        limits.warn,
                        "hub: {device} answered after its command timed out; ignored: {}",
                        escape(&text)
                    );
                } else if text.starts_with("ACK") {
                    crate::info_limited!(limits.info, "hub: {device} answered: {}", escape(&text));
                } else {
                    bad_line(
                        conn,
                        &mut limits.warn,
                        "unknown command (expected EVENT <seq> <KIND> or ACK ...)",
                    );
                }
            }
        },
        Err(reason) => bad_line(conn, &mut limits.warn, &reason),
    }
}

fn bad_line(conn: &mut Conn, limit: &mut RateLimit, reason: &str) {
    crate::warn_limited!(
        limit,
        "hub: bad line from {}: {}",
        conn.peer,
        escape(reason)
    );
    answer_err(conn, reason);
}

/// A line the client's role does not allow: `ERR forbidden`, nothing changed, the
/// connection stays; the log says who and why.
fn forbid(conn: &mut Conn, limit: &mut RateLimit, why: &str) {
    crate::warn_limited!(
        limit,
        "hub: forbidden for {} ({}): {}",
        conn.peer,
        conn.who(),
        escape(why)
    );
    answer_err(conn, protocol::FORBIDDEN);
}

/// Queues `ERR <reason>`.
fn answer_err(conn: &mut Conn, reason: &str) {
    let line = protocol::err_line(reason).into_bytes();
    if conn.awaiting > 0 {
        // Answers go out in the order the lines came: this one after the reports before it,
        // which wait for the disk.
        conn.deferred_bytes += line.len();
        conn.deferred.push_back((conn.awaiting, line));
    } else {
        conn.io.queue(&line);
    }
}

/// `CHAL`: a fresh nonce for the client to prove its key with. The hub never sends one
/// unasked, so a seed device that never asks sees nothing new.
fn challenge(conn: &mut Conn, gate: &mut Gate<'_>) {
    if refused_before_auth(conn, gate) {
        return;
    }
    let nonce = keys::random_hex(32);
    conn.io.queue(format!("CHAL {nonce}\n").as_bytes());
    conn.challenge = Some(nonce);
}

/// `CHAL` and `AUTH` come once, before `DEVICE`: otherwise `ERR <why>`, and the connection
/// stays. True if the line has been answered so.
fn refused_before_auth(conn: &mut Conn, gate: &mut Gate<'_>) -> bool {
    let out_of_turn = match (&conn.key, &conn.client) {
        (Some(key), _) => Some(format!("already authenticated as {}", key.name)),
        (None, Some(_)) => Some("CHAL and AUTH come before DEVICE".to_string()),
        (None, None) => None,
    };
    if let Some(why) = out_of_turn {
        bad_line(conn, &mut gate.limits.warn, &why);
        return true;
    }
    false
}

/// `AUTH <name> <mac>`: `OK AUTH <role>` if the mac proves the key over this connection's
/// nonce; anything else is `ERR auth` and the connection closes.
fn authenticate(conn: &mut Conn, gate: &mut Gate<'_>, words: Option<(String, String)>) {
    if refused_before_auth(conn, gate) {
        return;
    }
    // Each nonce proves one AUTH: it is used up whatever the outcome.
    let nonce = conn.challenge.take();
    let blocked = gate.failures.blocked(conn.peer.ip(), Instant::now());
    let checked = (|| {
        let nonce = nonce.ok_or("AUTH without CHAL first")?;
        let (name, mac) = words.ok_or("expected AUTH <name> <mac>")?;
        // An address shut out after too many failures gets `ERR auth` whatever it sends,
        // unchecked; only this daemon's own modules still get in (a local user failing on
        // purpose must not keep them out, and their secret cannot be guessed).
        if let Some(left) = blocked
            && !(name == keys::OWN_KEY_NAME && conn.local)
        {
            return Err(format!(
                "{} is refused for {} s more after {AUTH_FAILURES} failures",
                conn.peer.ip(),
                left.as_secs() + 1
            ));
        }
        let key = gate
            .keys
            .get(&name)
            .ok_or_else(|| format!("no key named {}", escape(&name)))?;
        if !keys::verify_auth(&key.secret, &name, &nonce, &mac) {
            return Err(format!("wrong mac for key {name}"));
        }
        // After AUTH the plain protocol can be taken over by anyone on the path: the keys
        // that may count people are accepted only where nobody else is on it.
        if key.role == Role::Node && !conn.local && !conn.io.stream().is_tls() {
            return Err(format!(
                "key {name} is a node key, accepted only over TLS or from this machine"
            ));
        }
        if name == keys::OWN_KEY_NAME && !conn.local {
            return Err("this daemon's own key is for its own modules".into());
        }
        Ok(key.clone())
    })();
    match checked {
        Ok(key) => {
            crate::info_limited!(
                gate.limits.info,
                "hub: {} authenticated with key {} ({})",
                conn.peer,
                key.name,
                key.role
            );
            conn.io.queue(protocol::auth_ok_line(key.role).as_bytes());
            conn.key = Some(key);
        }
        Err(why) => auth_failed(conn, gate, &why, blocked.is_none()),
    }
}

/// `ERR auth`, logged with the address and the reason, and the connection closes (its
/// further input is read and dropped so that the answer arrives).
fn auth_failed(conn: &mut Conn, gate: &mut Gate<'_>, why: &str, count: bool) {
    crate::warn_limited!(
        gate.limits.warn,
        "hub: authentication failed from {}: {why}",
        conn.peer
    );
    if count && gate.failures.record(conn.peer.ip(), Instant::now()) {
        crate::warn_limited!(
            gate.limits.warn,
            "hub: {} failed to authenticate {AUTH_FAILURES} times within {} s; refusing it for {} s",
            conn.peer.ip(),
            AUTH_WINDOW.as_secs(),
            AUTH_BLOCK.as_secs()
        );
    }
    conn.io.queue(protocol::AUTH_ERR.as_bytes());
    conn.io.discard_input();
}
