//! The hub (DESIGN.md §8): a TCP server that site modules and IoT devices connect to
//! ([`server`]), its line protocol ([`protocol`]), the staff counter it keeps ([`staff`]), and
//! the client side that site modules use to reach a hub, this one or another node's ([`link`]),
//! and the sensor streams: their parsing and cycle bookkeeping ([`stream`]) and the UDP
//! listener that serves them ([`udp`]); and seed 001's server record, `[hub] device-log`
//! ([`device_log`]).
//!
//! [`Hub`] puts the TCP server, the UDP listener, the latest readings and the answers owed to
//! `sitectl send` together. It touches no device and no file: what its clients sent comes back
//! to the loop as a [`HubOutput`] (reports for the ledger, readings for the rules), and its
//! timers are asks for the loop's heap (`timers::TimerAsks`).

pub mod device_log;
pub mod envelope;
pub mod link;
pub mod protocol;
pub mod sequence;
pub mod server;
pub mod staff;
pub mod stream;
pub mod udp;

use crate::config::site::{HubSection, resolve_addr};
use crate::conn_io::TokenRange;
use crate::timers::{TimerAsk, TimerAsks, monotonic_now};
use mio::{Registry, Token};
use server::{Asker, CommandDone, ConnRef, HubServer, IncomingReport, Reply};
use site_proto::{ErrorKind, Response};
use std::collections::BTreeMap;
use std::time::Duration;
use stream::{Reading, Readings};
use udp::SensorHub;

/// Descriptors kept for everything but hub clients (plugins, pins, control connections, the
/// store), when the open-file limit caps `max-clients`.
const FDS_KEPT: u64 = 256;

/// The hub's timers, in the loop's heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HubTimer {
    /// Connections that have not registered in time are closed.
    Sweep,
    /// A sensor's cycle has been quiet long enough to close.
    StreamGap,
    /// A connection's unterminated input has been quiet long enough to count as a line.
    Quiet(usize),
    /// An operator command's answer is due: (connection, command id).
    Command(usize, u64),
    /// Clients that `PING`ed and fell silent are dropped.
    Heartbeat,
}

/// The tokens the loop set aside for the hub's sockets.
#[derive(Clone, Copy, Debug)]
pub struct HubTokens {
    pub listener: Token,
    /// The TLS listener's (`[hub] tls`).
    pub tls_listener: Token,
    pub udp: Token,
    /// The client connections (at least `[hub] max-clients` of them).
    pub conns: TokenRange,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hub: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// What the hub's clients sent, for the loop to carry on with.
#[derive(Debug, Default)]
pub struct HubOutput {
    /// Reports for the ledger, in the order they came.
    pub reports: Vec<IncomingReport>,
    /// Connections that closed (their per-connection report epochs end).
    pub closed: Vec<ConnRef>,
    /// Fresh readings (already stored here) for the site's rules.
    pub readings: Vec<Reading>,
    /// A budget ran out with more waiting: the loop comes back.
    pub more: bool,
}

pub struct Hub {
    server: HubServer,
    sensors: Option<SensorHub>,
    /// The latest value of each reading, from UDP and TCP.
    readings: Readings,
    /// Answers to `sitectl send` that completed, for the control connections that asked.
    replies: Vec<(Asker, Response)>,
    timers: TimerAsks<HubTimer>,
    /// The sweep is armed (nobody older is waiting, so a new connection need not re-arm it).
    sweep_armed: bool,
    /// Where the stream-gap timer is armed: packets only move cycle deadlines later, so an
    /// earlier timer is left alone and re-arms when it fires (no heap work per datagram).
    gap_armed: Option<Duration>,
    /// What unsigned datagrams may do (`anonymous-role`), and how far a signed one's time
    /// may be from the hub's clock.
    anonymous: Option<crate::keys::Role>,
    window: Duration,
    /// The silence sweep is armed (while any client has sent a `PING`).
    heartbeat_armed: bool,
}

impl Hub {
    /// Binds the TCP listener (and the UDP one, if `udp` is set).
    pub fn start(
        h: &HubSection,
        keys: crate::keys::KeySet,
        cert: Option<crate::tls::HubCert>,
        registry: &Registry,
        tokens: HubTokens,
    ) -> Result<Hub, Error> {
        let addr = resolve_addr(&h.tcp).map_err(Error::Config)?;
        // Each client is a descriptor; keep some for the rest of the daemon.
        let fds = crate::limits::fd_limit().saturating_sub(FDS_KEPT);
        let max_clients = h
            .max_clients
            .min(usize::try_from(fds).unwrap_or(usize::MAX));
        if max_clients < h.max_clients {
            log::warn!(
                "hub: max-clients {} lowered to {max_clients} by the open-file limit (raise LimitNOFILE)",
                h.max_clients
            );
        }
        let max_clients = max_clients.min(tokens.conns.len);
        let window = Duration::from_secs_f64(h.datagram_window_secs);
        let mut server = HubServer::bind(
            addr,
            h.anonymous(),
            max_clients,
            h.max_clients_per_address,
            registry,
            tokens.listener,
            tokens.conns,
        )
        .map_err(|source| Error::Bind {
            addr: h.tcp.clone(),
            source,
        })?;
        server.set_keys(keys.clone(), registry);
        server.set_heartbeat(h.heartbeat());
        if let (Some(tls), Some(cert)) = (&h.tls, cert) {
            let addr = resolve_addr(tls).map_err(Error::Config)?;
            let fingerprint = cert.fingerprint.clone();
            let bound = server
                .listen_tls(addr, cert, registry, tokens.tls_listener)
                .map_err(|source| Error::Bind {
                    addr: tls.clone(),
                    source,
                })?;
            log::info!("hub: TLS on {bound}, certificate fingerprint {fingerprint}");
        }
        let device_log = match &h.device_log {
            Some(path) => {
                server.keep_device_log();
                format!(", device log {}", path.display())
            }
            None => String::new(),
        };
        log::info!(
            "hub: listening on {} (event log {}{device_log})",
            server.local_addr(),
            h.event_log.display()
        );
        let sensors = match &h.udp {
            Some(udp) => {
                let addr = resolve_addr(udp).map_err(Error::Config)?;
                let gap = Duration::from_millis(h.cycle_gap_ms);
                let sensors =
                    SensorHub::bind(addr, gap, registry, tokens.udp).map_err(|source| {
                        Error::Bind {
                            addr: udp.clone(),
                            source,
                        }
                    })?;
                log::info!("hub: sensor streams on udp {}", sensors.local_addr());
                Some(sensors)
            }
            None => None,
        };
        let mut sensors = sensors;
        if let Some(sensors) = &mut sensors {
            sensors.set_access(keys, h.anonymous(), window);
        }
        Ok(Hub {
            server,
            sensors,
            readings: Readings::default(),
            replies: Vec::new(),
            timers: TimerAsks::default(),
            sweep_armed: false,
            gap_armed: None,
            anonymous: h.anonymous(),
            window,
            heartbeat_armed: false,
        })
    }

    /// The TCP address actually bound (port 0 resolved): this node's own links report here.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// `sitectl cert`: the TLS listener's certificate, if there is one.
    pub fn cert(&self) -> Option<site_proto::CertInfo> {
        self.server.tls().map(|(addr, cert)| site_proto::CertInfo {
            file: cert.cert_file.display().to_string(),
            fingerprint: cert.fingerprint.clone(),
            listen: addr.to_string(),
        })
    }

    /// The keys clients authenticate with from now on; connections whose key was removed or
    /// changed are dropped (how many is returned).
    pub fn set_keys(&mut self, keys: crate::keys::KeySet, registry: &Registry) -> usize {
        if let Some(sensors) = &mut self.sensors {
            sensors.set_access(keys.clone(), self.anonymous, self.window);
        }
        self.server.set_keys(keys, registry)
    }

    pub fn keys(&self) -> &crate::keys::KeySet {
        self.server.keys()
    }

    /// How many connections are authenticated with each key.
    pub fn connections_by_key(&self) -> std::collections::HashMap<String, usize> {
        self.server.connections_by_key()
    }

    /// New connections (on the TLS listener if `tls`), at most `budget` of them. Returns
    /// true if more may be waiting.
    pub fn on_listener(&mut self, registry: &Registry, budget: usize, tls: bool) -> bool {
        let more = self.server.accept(registry, budget, tls);
        if !self.sweep_armed && self.server.has_unregistered() {
            // Nobody older is waiting, so the newest is the next one due.
            self.timers
                .arm(HubTimer::Sweep, monotonic_now() + server::REGISTER_TIMEOUT);
            self.sweep_armed = true;
        }
        more
    }

    /// A client sent something: its lines are handled, up to `budget` bytes of them.
    pub fn on_conn(&mut self, index: usize, registry: &Registry, budget: usize) -> HubOutput {
        let read = self.server.readable(index, registry, budget);
        self.arm_quiet(index);
        self.arm_heartbeat();
        let mut out = self.output(read.reports);
        out.more = read.more;
        out
    }

    /// Sensor datagrams arrived: one batch of them is read (the loop comes back for more, see
    /// [`HubOutput::more`]), its readings stored (and returned for the rules), and closed
    /// cycles answered.
    pub fn on_udp(&mut self) -> HubOutput {
        let Some(sensors) = &mut self.sensors else {
            return HubOutput::default();
        };
        let (readings, more) = sensors.readable(monotonic_now(), 1);
        self.store(&readings);
        self.arm_stream_gap();
        HubOutput {
            readings,
            more,
            ..HubOutput::default()
        }
    }

    /// One of the hub's timers fired.
    pub fn on_timer(&mut self, timer: HubTimer, registry: &Registry) -> HubOutput {
        let now = monotonic_now();
        match timer {
            HubTimer::Quiet(index) => {
                let reports = self.server.quiet(index, registry);
                self.arm_quiet(index);
                return self.output(reports);
            }
            HubTimer::Command(index, id) => self.server.command_timeout(index, id, registry),
            HubTimer::StreamGap => {
                self.gap_armed = None;
                if let Some(sensors) = &mut self.sensors {
                    sensors.expire(now);
                }
                self.arm_stream_gap();
            }
            HubTimer::Heartbeat => {
                self.heartbeat_armed = false;
                if let Some(next) = self.server.expire_silent(registry) {
                    let wait = next.saturating_duration_since(std::time::Instant::now());
                    self.timers.arm(HubTimer::Heartbeat, now + wait);
                    self.heartbeat_armed = true;
                }
            }
            HubTimer::Sweep => {
                self.sweep_armed = false;
                if let Some(next) = self.server.expire_unregistered(registry) {
                    let wait = next.saturating_duration_since(std::time::Instant::now());
                    self.timers.arm(HubTimer::Sweep, now + wait);
                    self.sweep_armed = true;
                }
            }
        }
        self.output(Vec::new())
    }

    /// What a batch of lines led to, with the commands it finished turned into answers.
    fn output(&mut self, reports: Vec<IncomingReport>) -> HubOutput {
        self.collect_commands();
        let readings = self.server.take_readings();
        self.store(&readings);
        HubOutput {
            reports,
            closed: self.server.take_closed(),
            readings,
            more: false,
        }
    }

    fn store(&mut self, readings: &[Reading]) {
        let at = std::time::SystemTime::now();
        for reading in readings {
            log::debug!(
                "hub: reading {} {}={}",
                reading.device,
                reading.quantity,
                reading.value
            );
            self.readings.store(reading, at);
        }
    }

    /// Sends the ledger's answers to reports (`OK <seq>` once on disk, or `ERR <reason>`).
    pub fn answer(&mut self, acks: &[(ConnRef, Reply)], registry: &Registry) {
        for (conn, reply) in acks {
            self.server.answer(*conn, reply, registry);
        }
    }

    /// `sitectl send`: the answer comes later, through [`Hub::take_replies`].
    pub fn send(
        &mut self,
        device: &str,
        command: &str,
        timeout: Duration,
        asker: Asker,
        registry: &Registry,
    ) -> Result<(), String> {
        self.server
            .send_command(device, command, timeout, asker, registry)?;
        self.collect_commands();
        Ok(())
    }

    /// Arms timeouts for commands just sent and turns finished ones into answers.
    fn collect_commands(&mut self) {
        let now = monotonic_now();
        for (index, id, timeout) in self.server.take_started() {
            self.timers.arm(HubTimer::Command(index, id), now + timeout);
        }
        for done in self.server.take_done() {
            let (asker, response) = match done {
                CommandDone::Reply {
                    asker,
                    device,
                    reply,
                } => (
                    asker,
                    Response::ok(serde_json::json!({ "device": device, "reply": reply })),
                ),
                CommandDone::Closed { asker, device } => (
                    asker,
                    Response::ok(serde_json::json!({ "device": device, "closed": true })),
                ),
                CommandDone::Failed { asker, reason } => {
                    (asker, Response::err(ErrorKind::Failed, reason))
                }
            };
            self.replies.push((asker, response));
        }
    }

    /// While any client has sent a `PING`, the sweep is armed for when the quietest would
    /// have been silent [`server::HEARTBEAT_MISSES`] heartbeats (an idle hub whose clients do
    /// not ping arms nothing).
    fn arm_heartbeat(&mut self) {
        if !self.heartbeat_armed && self.server.has_pinging() {
            let limit = self.server.heartbeat() * server::HEARTBEAT_MISSES;
            self.timers
                .arm(HubTimer::Heartbeat, monotonic_now() + limit);
            self.heartbeat_armed = true;
        }
    }

    /// Unterminated input waits [`server::QUIET`] before it counts as a line.
    fn arm_quiet(&mut self, index: usize) {
        if self.server.partial_deadline(index).is_some() {
            self.timers
                .arm(HubTimer::Quiet(index), monotonic_now() + server::QUIET);
        }
    }

    /// Keeps the gap timer at or before the earliest open cycle's deadline.
    fn arm_stream_gap(&mut self) {
        match self.sensors.as_ref().and_then(SensorHub::next_deadline) {
            Some(at) if self.gap_armed.is_none_or(|armed| at < armed) => {
                self.timers.arm(HubTimer::StreamGap, at);
                self.gap_armed = Some(at);
            }
            Some(_) => {}
            None => {
                if self.gap_armed.take().is_some() {
                    self.timers.cancel(HubTimer::StreamGap);
                }
            }
        }
    }

    /// Answers to deliver to control connections.
    pub fn take_replies(&mut self) -> Vec<(Asker, Response)> {
        std::mem::take(&mut self.replies)
    }

    /// Connections that stopped for backpressure and may be read again.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        self.server.take_resumed()
    }

    /// The device-log lines since the last look (`[hub] device-log`).
    pub fn take_device_log(&mut self) -> Vec<String> {
        self.server.take_device_log()
    }

    /// The timers asked for since the last look, for the loop's heap.
    pub fn take_timer_asks(&mut self) -> Vec<TimerAsk<HubTimer>> {
        self.timers.take()
    }

    /// `sitectl devices`, a page at a time: registered TCP clients by name, then UDP senders
    /// by name. The cursor (`next`, then `after`) is `tcp:<name>` or `udp:<host> <name>`.
    pub fn devices(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<site_proto::Page<site_proto::DeviceList>, String> {
        let limit = limit
            .unwrap_or(site_proto::MAX_PAGE)
            .clamp(1, site_proto::MAX_PAGE);
        let bad = || format!("bad `after` {after:?}: pass the `next` of the page before");
        let (tcp_after, udp_after) = match after {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some(("tcp", name)) => (Some(name), None),
                Some(("udp", rest)) => {
                    let (ip, name) = rest.split_once(' ').ok_or_else(bad)?;
                    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
                    (None, Some((name.to_string(), ip)))
                }
                _ => return Err(bad()),
            },
        };
        let mut list = Vec::new();
        let mut next = None;
        let senders = self.sensors.as_ref().map_or(0, SensorHub::sender_count);
        if udp_after.is_none() {
            let clients = self.server.clients(tcp_after, limit);
            // A full page ends here; the next starts after its last client, with the rest of
            // the clients or, if none, the first senders.
            if clients.len() == limit
                && let Some(last) = clients.last()
                && (senders > 0 || !self.server.clients(Some(&last.name), 1).is_empty())
            {
                next = Some(format!("tcp:{}", last.name));
            }
            list.extend(clients.into_iter().map(|c| {
                site_proto::DeviceEntry::Tcp(site_proto::TcpDevice {
                    address: c.address,
                    connected_secs: c.connected_secs,
                    key: c.key,
                    last_seen: c.last_seen,
                    name: c.name,
                    state: "connected".into(),
                    kind: c.kind,
                    via: if c.tls { "tls".into() } else { "tcp".into() },
                })
            }));
        }
        if next.is_none()
            && list.len() < limit
            && let Some(sensors) = &self.sensors
        {
            let (senders, more) = sensors.senders(udp_after.as_ref(), limit - list.len());
            list.extend(senders);
            next = more.map(|(name, ip)| format!("udp:{ip} {name}"));
        }
        Ok(site_proto::Page {
            items: site_proto::DeviceList {
                devices: list,
                rejected: match (after, &self.sensors) {
                    (None, Some(sensors)) => sensors.rejected(),
                    _ => Vec::new(),
                },
            },
            total: self.server.client_count() + senders,
            next,
        })
    }

    /// `sitectl sensors`: the latest readings, a page of devices at a time, by name.
    pub fn sensors_page(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> site_proto::Page<site_proto::SensorList> {
        let limit = limit
            .unwrap_or(site_proto::MAX_PAGE)
            .clamp(1, site_proto::MAX_PAGE);
        let (page, next) = self.readings.page(after, limit);
        site_proto::Page {
            items: site_proto::SensorList { sensors: page },
            total: self.readings.count(),
            next,
        }
    }

    /// `"sensors"` for status: the first few devices' latest readings.
    pub fn sensors(&self) -> BTreeMap<String, BTreeMap<String, site_proto::SensorReading>> {
        self.readings.page(None, site_proto::STATUS_LIST).0
    }

    /// How many devices have readings.
    pub fn sensor_count(&self) -> usize {
        self.readings.count()
    }

    /// `"hub"` for status: where it listens, the first few clients and streams, the counts.
    pub fn status(&self) -> site_proto::HubStatus {
        site_proto::HubStatus {
            listen: self.server.local_addr().to_string(),
            clients: self.server.clients(None, site_proto::STATUS_LIST),
            client_count: self.server.client_count(),
            udp: self.sensors.as_ref().map(SensorHub::streams),
            tls: self.server.tls().map(|(addr, _)| addr.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Key, Role};
    use crate::site::Report;
    use mio::{Events, Poll};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    const LISTENER: Token = Token(1);
    const UDP: Token = Token(2);
    const CONNS: TokenRange = TokenRange::new(100, 64);

    fn hub(poll: &Poll) -> Hub {
        let section: HubSection = toml::from_str(
            "tcp = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\nmax-clients = 64\ncycle-gap-ms = 100",
        )
        .expect("section");
        let tokens = HubTokens {
            listener: LISTENER,
            tls_listener: Token(3),
            udp: UDP,
            conns: CONNS,
        };
        let mut keys = std::collections::BTreeMap::new();
        keys.insert("front".to_string(), front_key());
        let keys = crate::keys::KeySet::new(keys, None);
        Hub::start(&section, keys, None, poll.registry(), tokens).expect("hub")
    }

    fn front_key() -> Key {
        Key {
            name: "front".into(),
            role: Role::Node,
            secret: crate::keys::Secret::from_hex(&"5a".repeat(32)).expect("secret"),
        }
    }

    /// Reads lines until one comes, serving the hub meanwhile.
    fn answer_line(poll: &mut Poll, hub: &mut Hub, reader: &mut BufReader<TcpStream>) -> String {
        reader.get_ref().set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut line = String::new();
        loop {
            serve(poll, hub, |_| true);
            match reader.read_line(&mut line) {
                Ok(_) if line.ends_with('\n') => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            assert!(Instant::now() < deadline, "no answer; so far {line:?}");
        }
        reader.get_ref().set_nonblocking(false).expect("blocking");
        line
    }

    /// Serves the hub's sockets as the loop would (at least one poll), until `done` says what
    /// came out is enough.
    fn serve(poll: &mut Poll, hub: &mut Hub, done: impl Fn(&HubOutput) -> bool) -> HubOutput {
        let mut all = HubOutput::default();
        let mut events = Events::with_capacity(16);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut first = true;
        while std::mem::take(&mut first) || !done(&all) {
            assert!(
                Instant::now() < deadline,
                "the hub did not get there: {all:?}"
            );
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .expect("poll");
            for event in &events {
                let out = match event.token() {
                    LISTENER => {
                        hub.on_listener(poll.registry(), server::ACCEPT_BUDGET, false);
                        continue;
                    }
                    UDP => hub.on_udp(),
                    token => match CONNS.slot(token) {
                        Some(index) => {
                            hub.on_conn(index, poll.registry(), server::READ_BUDGET_BYTES)
                        }
                        None => continue,
                    },
                };
                all.reports.extend(out.reports);
                all.closed.extend(out.closed);
                all.readings.extend(out.readings);
            }
        }
        all
    }

    fn client(hub: &Hub) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(hub.local_addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        (stream, reader)
    }

    #[test]
    fn a_report_comes_out_for_the_ledger_and_its_answer_goes_back() {
        let mut poll = Poll::new().expect("poll");
        let mut hub = hub(&poll);
        let (mut stream, mut reader) = client(&hub);
        // Without a key, the site events are forbidden (loopback clients are actuators).
        stream
            .write_all(b"DEVICE front-access TYPE access-control EPOCH 0123abcd\nEVENT 1 ENTRY\n")
            .expect("send");
        assert_eq!(
            answer_line(&mut poll, &mut hub, &mut reader),
            "ERR forbidden\n"
        );
        assert_eq!(
            answer_line(&mut poll, &mut hub, &mut reader),
            "ERR forbidden\n"
        );
        let (mut stream, mut reader) = client(&hub);
        stream.write_all(b"CHAL\n").expect("send");
        let chal = answer_line(&mut poll, &mut hub, &mut reader);
        let nonce = chal
            .strip_prefix("CHAL ")
            .map(str::trim_end)
            .expect("a nonce");
        assert_eq!(nonce.len(), 64);
        let mac = crate::keys::auth_mac(&front_key().secret, "front", nonce);
        stream
            .write_all(format!("AUTH front {mac}\n").as_bytes())
            .expect("send");
        assert_eq!(
            answer_line(&mut poll, &mut hub, &mut reader),
            "OK AUTH node\n"
        );
        stream
            .write_all(b"DEVICE front-access TYPE access-control EPOCH 0123abcd\nEVENT 1 ENTRY\n")
            .expect("send");
        let out = serve(&mut poll, &mut hub, |o| !o.reports.is_empty());
        let report = &out.reports[0];
        assert_eq!(
            (report.client.as_str(), report.seq, report.report),
            ("front-access", 1, Report::Entry)
        );
        assert_eq!(report.epoch, server::Epoch::Node("0123abcd".into()));
        assert_eq!(hub.status().client_count, 1);
        // The ledger says when it is on disk; the hub only carries the answer.
        hub.answer(&[(report.conn, Reply::Ok(1))], poll.registry());
        let mut line = String::new();
        reader.read_line(&mut line).expect("answer");
        assert_eq!(line, "OK 1\n");
        // A registration asks for no sweep; the unregistered connection before it did.
        let asks = hub.take_timer_asks();
        assert!(
            asks.iter()
                .any(|a| matches!(a, TimerAsk::Arm(HubTimer::Sweep, _))),
            "{asks:?}"
        );
    }

    #[test]
    fn readings_over_udp_and_tcp_are_stored_and_come_out_for_the_rules() {
        let mut poll = Poll::new().expect("poll");
        let mut hub = hub(&poll);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let udp_addr = hub.sensors.as_ref().expect("udp").local_addr();
        udp.send_to(b"Sensor01,t,temperature,27.5,SEQ:1", udp_addr)
            .expect("send");
        let out = serve(&mut poll, &mut hub, |o| !o.readings.is_empty());
        assert_eq!(out.readings[0].device, "Sensor01");
        assert_eq!(out.readings[0].value, 27.5);
        let (mut stream, _reader) = client(&hub);
        stream
            .write_all(b"{\"type\": \"humidity\", \"device\": \"sensor2\", \"value\": 41}\n")
            .expect("send");
        let out = serve(&mut poll, &mut hub, |o| !o.readings.is_empty());
        assert_eq!(out.readings[0].quantity, "humidity");
        assert_eq!(hub.sensor_count(), 2);
        let sensors = hub.sensors();
        assert_eq!(sensors["Sensor01"]["temperature"].value, 27.5);
        // The open cycle asked for its gap timer.
        let asks = hub.take_timer_asks();
        assert!(
            asks.iter()
                .any(|a| matches!(a, TimerAsk::Arm(HubTimer::StreamGap, _))),
            "{asks:?}"
        );
    }

    #[test]
    fn an_operator_command_goes_out_and_its_answer_comes_back_as_a_reply() {
        let mut poll = Poll::new().expect("poll");
        let mut hub = hub(&poll);
        let (mut stream, mut reader) = client(&hub);
        stream
            .write_all(b"DEVICE Sensor01 TYPE temperature\n")
            .expect("send");
        serve(&mut poll, &mut hub, |_| true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.status().client_count == 0 {
            assert!(Instant::now() < deadline, "never registered");
            serve(&mut poll, &mut hub, |_| true);
        }
        let asker = Asker {
            conn: 3,
            generation: 7,
        };
        hub.send(
            "Sensor01",
            "PING",
            Duration::from_secs(5),
            asker,
            poll.registry(),
        )
        .expect("sent");
        let mut line = String::new();
        reader.read_line(&mut line).expect("command");
        assert_eq!(line, "PING\n");
        let asks = hub.take_timer_asks();
        let Some(TimerAsk::Arm(timeout @ HubTimer::Command(..), _)) = asks
            .iter()
            .find(|a| matches!(a, TimerAsk::Arm(HubTimer::Command(..), _)))
            .cloned()
        else {
            panic!("no command timeout asked for: {asks:?}");
        };
        stream.write_all(b"ACK PING\n").expect("answer");
        let deadline = Instant::now() + Duration::from_secs(10);
        let replies = loop {
            serve(&mut poll, &mut hub, |_| true);
            let replies = hub.take_replies();
            if !replies.is_empty() {
                break replies;
            }
            assert!(Instant::now() < deadline, "no reply");
        };
        assert_eq!(replies[0].0, asker);
        assert_eq!(
            replies[0].1,
            Response::ok(serde_json::json!({ "device": "Sensor01", "reply": "ACK PING" }))
        );
        // The answered command's timeout fires into nothing.
        hub.on_timer(timeout, poll.registry());
        assert!(hub.take_replies().is_empty());
        assert!(
            hub.send(
                "nobody",
                "PING",
                Duration::from_secs(1),
                asker,
                poll.registry()
            )
            .unwrap_err()
            .contains("no device named \"nobody\"")
        );
    }
}
