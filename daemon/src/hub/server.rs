//! The hub's TCP listener and its client connections (DESIGN.md §8). This file does the socket
//! work: accepting, framing lines, registering clients and logging who connects; what a report
//! means (the staff counter, the event log) is decided by the loop, which answers `OK` once the
//! change is on disk. A bad line gets `ERR <reason>` and never takes the daemon down.

use super::protocol::{self, Line};
use crate::conn_io;
use crate::event_loop::Tok;
use crate::rate_limit::RateLimit;
use crate::site::Report;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
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
    stream: TcpStream,
    peer: SocketAddr,
    /// Bumped per accepted connection so a late `OK` never reaches a successor in the slot.
    generation: u64,
    since: Instant,
    client: Option<Client>,
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
    writable_registered: bool,
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
    /// After an overlong line: our error is sent, then the rest is read and dropped until the
    /// peer closes (see `conn_io::discard_available`).
    discarding: Option<usize>,
}

/// A report a client sent, for the loop to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingReport {
    pub conn: ConnRef,
    pub client: String,
    pub seq: u64,
    pub report: Report,
}

/// A connection slot and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub index: usize,
    pub generation: u64,
}

/// What a client is, for `sitectl status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
    pub connected_secs: u64,
    /// Local wall-clock time of the client's last message.
    pub last_seen: String,
}

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
}

pub struct HubServer {
    listener: TcpListener,
    addr: SocketAddr,
    conns: Vec<Option<Conn>>,
    /// Open connections, and the free slots in `conns` (reused before it grows).
    live: usize,
    free: Vec<usize>,
    /// Registered names and their connection: a command finds its device without a scan.
    by_name: HashMap<String, usize>,
    /// More connections than this are turned away with `ERR too many clients`.
    max_clients: usize,
    /// A descriptor held in reserve: when the process runs out (EMFILE), it is closed to
    /// accept the waiting connection and turn it away, so the backlog does not stall.
    spare_fd: Option<std::fs::File>,
    next_generation: u64,
    next_command: u64,
    readings: Vec<super::stream::Reading>,
    started: Vec<(usize, u64, Duration)>,
    done: Vec<CommandDone>,
    log_limit: RateLimit,
}

impl HubServer {
    pub fn bind(
        addr: SocketAddr,
        max_clients: usize,
        registry: &Registry,
    ) -> io::Result<HubServer> {
        let mut listener = listen(addr)?;
        let addr = listener.local_addr()?;
        registry.register(&mut listener, Tok::HubListener.into(), Interest::READABLE)?;
        Ok(HubServer {
            listener,
            addr,
            conns: Vec::new(),
            live: 0,
            free: Vec::new(),
            by_name: HashMap::new(),
            max_clients,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            next_generation: 0,
            next_command: 0,
            readings: Vec::new(),
            started: Vec::new(),
            done: Vec::new(),
            log_limit: RateLimit::new(20, Duration::from_secs(60)),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.live >= self.max_clients {
                        let _ = stream.write_all(protocol::err_line("too many clients").as_bytes());
                        crate::warn_limited!(
                            self.log_limit,
                            "hub: turned away {peer}: {} clients connected (max-clients)",
                            self.live
                        );
                        continue;
                    }
                    let index = self.free.pop().unwrap_or(self.conns.len());
                    if let Err(e) = registry.register(
                        &mut stream,
                        Tok::HubConn(index).into(),
                        Interest::READABLE,
                    ) {
                        log::warn!("hub: could not register a connection from {peer}: {e}");
                        if index < self.conns.len() {
                            self.free.push(index);
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    keepalive(&stream);
                    self.live += 1;
                    self.next_generation += 1;
                    log::info!("hub: connection from {peer}");
                    let conn = Conn {
                        stream,
                        peer,
                        generation: self.next_generation,
                        since: Instant::now(),
                        last_seen: std::time::SystemTime::now(),
                        commands: VecDeque::new(),
                        in_flight: None,
                        late_answers: 0,
                        sends_readings: false,
                        client: None,
                        input: Vec::new(),
                        output: Vec::new(),
                        closing: false,
                        writable_registered: false,
                        discarding: None,
                        partial_since: None,
                    };
                    if index == self.conns.len() {
                        self.conns.push(Some(conn));
                    } else {
                        self.conns[index] = Some(conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: use the spare to take the connection off the backlog
                    // and turn it away (edge-triggered: left there, it would never be seen
                    // again), then take the spare back.
                    crate::warn_limited!(
                        self.log_limit,
                        "hub: out of file descriptors with {} clients ({e}); turning connections away (raise LimitNOFILE or lower max-clients)",
                        self.live
                    );
                    if self.spare_fd.take().is_none() {
                        return;
                    }
                    if let Ok((mut stream, _)) = self.listener.accept() {
                        let _ = stream.write_all(protocol::err_line("too many clients").as_bytes());
                    }
                    self.spare_fd = std::fs::File::open("/dev/null").ok();
                }
                Err(e) => {
                    log::warn!("hub: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what a connection sent; returns the reports it carried, in order.
    pub fn readable(&mut self, index: usize, registry: &Registry) -> Vec<IncomingReport> {
        let mut fx = LineEffects::default();
        let limit = &mut self.log_limit;
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return Vec::new();
        };
        if let Some(dropped) = conn.discarding.as_mut() {
            if conn_io::discard_available(&mut conn.stream, dropped, conn_io::DISCARD_LIMIT_BYTES) {
                conn.discarding = None;
            }
            self.flush(index, registry);
            return Vec::new();
        }
        if conn_io::read_available(
            &mut conn.stream,
            &mut conn.input,
            64 * protocol::MAX_LINE_BYTES,
        ) {
            conn.closing = true;
        }
        while let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = conn.input.drain(..=end).collect();
            handle_line(conn, limit, index, &raw[..raw.len() - 1], &mut fx);
        }
        // A peer that closed after an unterminated message still meant it.
        if conn.closing && !conn.input.is_empty() && conn.input.len() <= protocol::MAX_LINE_BYTES {
            let raw = std::mem::take(&mut conn.input);
            handle_line(conn, limit, index, &raw, &mut fx);
        }
        conn.partial_since = (!conn.input.is_empty()).then(Instant::now);
        if conn.input.len() > protocol::MAX_LINE_BYTES {
            conn.input.clear();
            bad_line(conn, limit, "line too long");
            conn.closing = true;
            let mut dropped = 0;
            if !conn_io::discard_available(
                &mut conn.stream,
                &mut dropped,
                conn_io::DISCARD_LIMIT_BYTES,
            ) {
                conn.discarding = Some(dropped);
            }
        }
        self.after_lines(index, fx, registry)
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
                log::warn!("hub: {name} registered again; the new connection replaces the old one");
                self.close(old, registry);
            }
            self.by_name.insert(name, index);
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
        let limit = &mut self.log_limit;
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return Vec::new();
        };
        if conn.partial_since.is_some_and(|at| at.elapsed() >= QUIET) {
            let raw = std::mem::take(&mut conn.input);
            conn.partial_since = None;
            handle_line(conn, limit, index, &raw, &mut fx);
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
        let index = *self.by_name.get(device).ok_or_else(|| {
            format!("no device named \"{device}\" is connected (see sitectl devices)")
        })?;
        if text.trim().eq_ignore_ascii_case("quit") {
            log::info!("hub: closing the connection with {device} at the operator's request");
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
        if let Some(Some(conn)) = self.conns.get_mut(index) {
            conn.commands.push_back(command);
        }
        self.start_next(index);
        self.flush(index, registry);
        Ok(())
    }

    /// Sends the device's next queued command if none is waiting for an answer.
    fn start_next(&mut self, index: usize) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        if conn.in_flight.is_some() {
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
        log::info!("hub: sent command to {device}: {}", command.text);
        conn.output
            .extend_from_slice(format!("{}\n", command.text).as_bytes());
        self.started.push((index, command.id, command.timeout));
        conn.in_flight = Some(command);
    }

    /// A command's time is up: if it is still unanswered, it fails, and the answer, should it
    /// come late, is not taken for the next command's.
    pub fn command_timeout(&mut self, index: usize, id: u64, registry: &Registry) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
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
            log::warn!(
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
        self.conns
            .get(index)?
            .as_ref()?
            .partial_since
            .map(|at| at + QUIET)
    }

    /// Sends `OK <seq>` if the connection is still the one the report came on.
    pub fn acknowledge(&mut self, conn: ConnRef, seq: u64, registry: &Registry) {
        if let Some(Some(c)) = self.conns.get_mut(conn.index)
            && c.generation == conn.generation
        {
            c.output
                .extend_from_slice(protocol::ok_line(seq).as_bytes());
            self.flush(conn.index, registry);
        }
    }

    pub fn flush(&mut self, index: usize, registry: &Registry) {
        let Some(Some(conn)) = self.conns.get_mut(index) else {
            return;
        };
        let failed = conn_io::write_pending(&mut conn.stream, &mut conn.output).is_err();
        if conn.closing && conn.output.is_empty() && conn.discarding.is_some() {
            // Said our piece; wait for the peer to close (see `discarding`).
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        if failed || (conn.closing && conn.output.is_empty() && conn.discarding.is_none()) {
            self.close(index, registry);
            return;
        }
        let token = Tok::HubConn(index).into();
        conn_io::want_writable(
            registry,
            &mut conn.stream,
            token,
            !conn.output.is_empty(),
            &mut conn.writable_registered,
        );
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(slot) = self.conns.get_mut(index)
            && let Some(mut conn) = slot.take()
        {
            let _ = registry.deregister(&mut conn.stream);
            self.live -= 1;
            self.free.push(index);
            let device = conn
                .client
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            if self.by_name.get(&device) == Some(&index) {
                self.by_name.remove(&device);
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
            match &conn.client {
                Some(client) => {
                    log::info!("hub: {} disconnected ({})", client.describe(), conn.peer)
                }
                None => log::info!("hub: connection from {} closed", conn.peer),
            }
        }
    }

    /// Closes connections that never registered (called from a periodic timer).
    pub fn expire_unregistered(&mut self, registry: &Registry) {
        let now = Instant::now();
        for index in 0..self.conns.len() {
            let stale = matches!(&self.conns[index], Some(c) if c.client.is_none() && !c.sends_readings && now.duration_since(c.since) > REGISTER_TIMEOUT);
            if stale {
                if let Some(Some(conn)) = self.conns.get_mut(index) {
                    conn.output.extend_from_slice(
                        protocol::err_line("no DEVICE registration; closing").as_bytes(),
                    );
                    conn.closing = true;
                }
                self.flush(index, registry);
            }
        }
    }

    /// Are there connections that have not registered yet (so the expiry timer is needed)?
    pub fn has_unregistered(&self) -> bool {
        self.conns
            .iter()
            .flatten()
            .any(|c| c.client.is_none() && !c.sends_readings)
    }

    pub fn clients(&self) -> Vec<ClientStatus> {
        let now = Instant::now();
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| {
                let client = c.client.as_ref()?;
                Some(ClientStatus {
                    name: client.name.clone(),
                    kind: client.kind.clone(),
                    address: c.peer.to_string(),
                    connected_secs: now.duration_since(c.since).as_secs(),
                    last_seen: super::stream::local_time(c.last_seen),
                })
            })
            .collect()
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

/// Handles one line (without its newline) from a client.
fn handle_line(
    conn: &mut Conn,
    limit: &mut RateLimit,
    index: usize,
    raw: &[u8],
    fx: &mut LineEffects,
) {
    conn.last_seen = std::time::SystemTime::now();
    if raw.len() > protocol::MAX_LINE_BYTES {
        bad_line(conn, limit, "line too long");
        return;
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        bad_line(conn, limit, "line is not UTF-8");
        return;
    };
    let text = text.trim_end_matches('\r');
    if text.is_empty() {
        return;
    }
    // Seed 002 peers send JSON readings, registered or not.
    if text.starts_with('{') {
        match super::stream::parse(text.as_bytes()) {
            Ok(reading) => {
                conn.sends_readings = true;
                fx.readings.push(reading);
            }
            Err(reason) => bad_line(conn, limit, &reason),
        }
        return;
    }
    match protocol::parse(text) {
        Ok(Line::Register { name, kind }) => {
            let client = Client { name, kind };
            if let Some(old) = &conn.client {
                bad_line(conn, limit, &format!("already registered as {}", old.name));
                return;
            }
            // Seed 001's server line, with where it came from; modules named as such (seed 000).
            let role = match client.kind.as_str() {
                protocol::TYPE_ACCESS | protocol::TYPE_EMERGENCY => {
                    format!(" ({})", client.describe())
                }
                _ => String::new(),
            };
            log::info!(
                "hub: registered DEVICE={} TYPE={} from {}{role}",
                client.name,
                client.kind,
                conn.peer
            );
            fx.registered = Some(client.name.clone());
            conn.client = Some(client);
        }
        Ok(Line::Event { seq, report }) => match &conn.client {
            None => bad_line(conn, limit, "register first: DEVICE <name> TYPE <type>"),
            Some(client) if !protocol::type_may_report(&client.kind, report) => {
                let reason = format!("a {} client may not report {}", client.kind, report.wire());
                bad_line(conn, limit, &reason);
            }
            Some(client) => fx.reports.push(IncomingReport {
                conn: ConnRef {
                    index,
                    generation: conn.generation,
                },
                client: client.name.clone(),
                seq,
                report,
            }),
        },
        Ok(Line::Other(text)) => match &conn.client {
            None => bad_line(conn, limit, "register first: DEVICE <name> TYPE <type>"),
            Some(client) => {
                let device = client.name.clone();
                if let Some(command) = conn.in_flight.take() {
                    log::info!("hub: {device} answered {:?}: {text}", command.text);
                    fx.done.push(CommandDone::Reply {
                        asker: command.asker,
                        device,
                        reply: text,
                    });
                } else if conn.late_answers > 0 {
                    conn.late_answers -= 1;
                    log::warn!(
                        "hub: {device} answered after its command timed out; ignored: {text}"
                    );
                } else if text.starts_with("ACK") {
                    log::info!("hub: {device} answered: {text}");
                } else {
                    bad_line(
                        conn,
                        limit,
                        "unknown command (expected EVENT <seq> <KIND> or ACK ...)",
                    );
                }
            }
        },
        Err(reason) => bad_line(conn, limit, &reason),
    }
}

fn bad_line(conn: &mut Conn, limit: &mut RateLimit, reason: &str) {
    crate::warn_limited!(limit, "hub: bad line from {}: {reason}", conn.peer);
    conn.output
        .extend_from_slice(protocol::err_line(reason).as_bytes());
}
