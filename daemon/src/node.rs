//! What this node runs beyond its devices (DESIGN.md §3 steps 3 and 5): the site modules its
//! config has sections for, the hub (if `[hub]`), the modules' links to their hubs, and the
//! ledger they persist through. The event loop hands it device events, socket readiness and
//! timers; it hands the site logic's commands back to the devices.

use crate::config::{Config, site::resolve_addr};
use crate::conn_io::TokenRange;
use crate::devices::{DeviceEvent, Devices};
use crate::hub::link::{HubLink, LinkOutcome};
use crate::hub::protocol;
use crate::hub::server::{Asker, CommandDone, HubServer, IncomingReport};
use crate::hub::stream::{Reading, Readings};
use crate::hub::udp::SensorHub;
use crate::hw::Hardware;
use crate::ledger::Ledger;
use crate::site::access::{AccessConfig, AccessControl};
use crate::site::emergency::{Emergency, EmergencyConfig};
use crate::site::office::{Office, OfficeConfig};
use crate::site::rules::{Rule, RuleConfig, RuleState};
use crate::site::{Effects, Module, NoteLevel, Site, SiteTimer, TimerRequest};
use crate::timers::Timers;
use crate::timers::monotonic_now;
use mio::{Registry, Token};
use site_proto::{ErrorKind, Response};
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept for everything but hub clients (plugins, pins, control connections, the
/// store), when the open-file limit caps `max-clients`.
const FDS_KEPT: u64 = 256;
/// Device commands can cause device events (rarely); this bounds the back-and-forth.
const MAX_ROUNDS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NodeTimer {
    Site(SiteTimer),
    LinkRetry(usize),
    HubSweep,
    StreamGap,
    HubQuiet(usize),
    /// An operator command's answer is due: (hub connection, command id).
    Command(usize, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("hub: cannot listen on {addr}: {source}")]
    HubBind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// The tokens the loop set aside for the node's sockets.
#[derive(Clone, Copy, Debug)]
pub struct NodeTokens {
    pub hub_listener: Token,
    pub hub_udp: Token,
    /// The hub's client connections (at least `[hub] max-clients` of them).
    pub hub_conns: TokenRange,
    /// One per site module's link to its hub.
    pub links: TokenRange,
}

pub struct Node {
    site: Site,
    tokens: Option<NodeTokens>,
    ledger: Option<Ledger>,
    hub: Option<HubServer>,
    sensors: Option<SensorHub>,
    links: Vec<(Module, HubLink)>,
    timers: Timers<NodeTimer>,
    /// Answers to control requests that completed later (`sitectl send`).
    replies: Vec<(Asker, Response)>,
    /// The latest sensor readings, from UDP and TCP.
    readings: Readings,
    /// Event-log lines that reached the disk, for `sitectl log -f`.
    lines: Vec<String>,
    /// What readings make the rules log (a client can send them as fast as it likes).
    reading_log_limit: crate::rate_limit::RateLimit,
}

fn hostname() -> String {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    link_name_base(&raw)
}

/// The host name as the start of a hub registration name (`<host>-access`): only what the
/// protocol allows in a name (letters, digits, `_-.@`; anything else becomes `-`), at most 48
/// characters, and `sited` for a machine with no name (the kernel's `(none)`, or empty).
fn link_name_base(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() || host == "(none)" {
        "sited".to_string()
    } else {
        name.to_string()
    }
}

impl Node {
    /// A node with no site sections: nothing to do beyond the devices.
    pub fn empty() -> Node {
        Node {
            site: Site::default(),
            tokens: None,
            ledger: None,
            hub: None,
            sensors: None,
            links: Vec::new(),
            timers: Timers::new(),
            replies: Vec::new(),
            readings: Readings::default(),
            lines: Vec::new(),
            reading_log_limit: crate::rate_limit::RateLimit::new(30, Duration::from_secs(10)),
        }
    }

    /// Starts the hub, the ledger and the modules, then derives outputs from the inputs as
    /// they are now and the persisted state (a cycle in progress is never resumed).
    pub fn start(
        config: &Config,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
        tokens: NodeTokens,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Node, Error> {
        let runs_site =
            config.access.is_some() || config.emergency.is_some() || config.office.is_some();
        if !runs_site && config.hub.is_none() {
            return Ok(Node::empty());
        }
        let event_log = config.hub.as_ref().map(|h| h.event_log.as_path());
        let device_log = config.hub.as_ref().and_then(|h| h.device_log.as_deref());
        let ledger = Ledger::open(&config.daemon.state_dir, event_log, device_log, wake)?;
        let hub = match &config.hub {
            Some(h) => {
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
                let max_clients = max_clients.min(tokens.hub_conns.len);
                let mut server = HubServer::bind(
                    addr,
                    max_clients,
                    h.max_clients_per_address,
                    registry,
                    tokens.hub_listener,
                    tokens.hub_conns,
                )
                .map_err(|source| Error::HubBind {
                    addr: h.tcp.clone(),
                    source,
                })?;
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
                Some(server)
            }
            None => None,
        };
        let sensors = match config
            .hub
            .as_ref()
            .and_then(|h| h.udp.as_ref().map(|u| (u, h.cycle_gap_ms)))
        {
            Some((udp, gap_ms)) => {
                let addr = resolve_addr(udp).map_err(Error::Config)?;
                let server = SensorHub::bind(
                    addr,
                    Duration::from_millis(gap_ms),
                    registry,
                    tokens.hub_udp,
                )
                .map_err(|source| Error::HubBind {
                    addr: udp.clone(),
                    source,
                })?;
                log::info!("hub: sensor streams on udp {}", server.local_addr());
                Some(server)
            }
            None => None,
        };
        let mut node = Node {
            site: Site::default(),
            tokens: Some(tokens),
            ledger: Some(ledger),
            hub,
            sensors,
            links: Vec::new(),
            timers: Timers::new(),
            replies: Vec::new(),
            readings: Readings::default(),
            lines: Vec::new(),
            reading_log_limit: crate::rate_limit::RateLimit::new(30, Duration::from_secs(10)),
        };
        node.build_site(config, registry)?;
        let fx = node.site.start(|d| devices.state_of(d));
        node.apply(fx, devices, hw);
        Ok(node)
    }

    fn build_site(&mut self, config: &Config, registry: &Registry) -> Result<(), Error> {
        let state = self
            .ledger
            .as_ref()
            .map(|l| l.state().clone())
            .unwrap_or_default();
        let own_hub = self.hub.as_ref().map(|h| h.local_addr());
        let epoch = self
            .ledger
            .as_ref()
            .map(|l| l.epoch().to_string())
            .unwrap_or_default();
        let host = hostname();
        let link_tokens = self.tokens.map(|t| t.links);
        self.links.clear();
        self.timers
            .cancel_where(|t| matches!(t, NodeTimer::LinkRetry(_) | NodeTimer::Site(_)));
        let mut link_for =
            |module: Module, hub: &Option<String>, name: &Option<String>, kind: &'static str| {
                let addr = match hub {
                    Some(text) => resolve_addr(text).map_err(Error::Config)?,
                    None => own_hub.ok_or_else(|| {
                        Error::Config(format!("[{}] has no hub to report to", module.key()))
                    })?,
                };
                let name = name
                    .clone()
                    .unwrap_or_else(|| format!("{host}-{}", module.key()));
                let token = link_tokens
                    .map(|range| range.token(self.links.len()))
                    .ok_or_else(|| Error::Config("no tokens for links".into()))?;
                self.links.push((
                    module,
                    HubLink::new(module.key(), name, kind, epoch.clone(), addr, token),
                ));
                Ok::<(), Error>(())
            };
        self.site.access = match &config.access {
            Some(a) => {
                link_for(Module::Access, &a.hub, &a.name, protocol::TYPE_ACCESS)?;
                Some(AccessControl::new(AccessConfig {
                    entry_button: a.entry_button.clone(),
                    exit_button: a.exit_button.clone(),
                    entry_door: a.entry_door.clone(),
                    exit_door: a.exit_door.clone(),
                    entry_led: a.entry_led.clone(),
                    exit_led: a.exit_led.clone(),
                    open: Duration::from_secs_f64(a.open_secs),
                }))
            }
            None => None,
        };
        self.site.emergency = match &config.emergency {
            Some(e) => {
                link_for(Module::Emergency, &e.hub, &e.name, protocol::TYPE_EMERGENCY)?;
                Some(Emergency::new(
                    EmergencyConfig {
                        door: e.door.clone(),
                        siren: e.siren.clone(),
                    },
                    state.emergency_reported_open,
                ))
            }
            None => None,
        };
        self.site.office = config.office.as_ref().map(|o| {
            Office::new(
                OfficeConfig {
                    door: o.door.clone(),
                    lock_switch: o.lock_switch.clone(),
                    lock: o.lock.clone(),
                    light: o.light.clone(),
                    fan: o.fan.clone(),
                },
                state.office_occupied,
            )
        });
        self.site.rules = config
            .rules
            .iter()
            .map(|r| {
                let name = r.name();
                let saved = state.rules.get(&name).copied();
                Rule::new(
                    RuleConfig {
                        name,
                        sensor: r.sensor.clone(),
                        quantity: r.quantity.clone(),
                        above: r.above,
                        hysteresis: r.hysteresis,
                        device: r.device.clone(),
                    },
                    saved.unwrap_or(RuleState::Idle),
                )
            })
            .collect();
        for slot in 0..self.links.len() {
            let (module, link) = &mut self.links[slot];
            if let Some(ledger) = &self.ledger {
                link.set_durable(ledger.durable_seq(*module));
            }
            if let Err(wait) = link.connect(registry) {
                self.timers
                    .arm(NodeTimer::LinkRetry(slot), monotonic_now() + wait);
            }
        }
        Ok(())
    }

    /// Re-binds the site modules after a reload (the hub itself needs a restart). Access is
    /// idle with its doors closed afterwards; occupancy, rule states and outboxes carry over. A
    /// device that a removed rule drove, and that nothing drives now, is switched off.
    pub fn reload(
        &mut self,
        config: &Config,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) -> Result<(), Error> {
        if self.ledger.is_none()
            && (config.access.is_some() || config.emergency.is_some() || config.office.is_some())
        {
            return Err(Error::Config(
                "adding site modules to a node that ran none needs a restart".into(),
            ));
        }
        let ruled: Vec<String> = self
            .site
            .rules
            .iter()
            .map(|r| r.config().device.clone())
            .collect();
        self.build_site(config, registry)?;
        let mut fx = self.site.start(|d| devices.state_of(d));
        for device in ruled {
            let still_driven = fx.commands.iter().any(|c| c.device == device);
            if !still_driven && devices.state_of(&device).is_some() {
                fx.info(format!("{device}: no rule drives it any more; off"));
                fx.command(&device, "off");
            }
        }
        self.apply(fx, devices, hw);
        Ok(())
    }

    /// Step 3: device events go to the site modules; their effects are carried out.
    pub fn on_device_events(
        &mut self,
        events: &mut Vec<DeviceEvent>,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) {
        for _ in 0..MAX_ROUNDS {
            if events.is_empty() {
                break;
            }
            for event in std::mem::take(events) {
                log::info!("{}: {}", event.device, event.event);
                let fx = self.site.on_device(&event.device, &event.event);
                events.extend(self.apply(fx, devices, hw));
            }
        }
        events.clear();
        self.pump(registry);
    }

    /// Carries out a module's effects; returns device events the commands caused.
    fn apply(
        &mut self,
        fx: Effects,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
    ) -> Vec<DeviceEvent> {
        for (level, note) in &fx.notes {
            match level {
                NoteLevel::Info => log::info!("{note}"),
                NoteLevel::Warn => log::warn!("{note}"),
            }
        }
        let mut caused = Vec::new();
        for command in &fx.commands {
            if let Err(e) = devices.command(&command.device, command.value, hw, &mut caused) {
                log::error!("site: {} {}: {}", command.device, command.value, e.message);
            }
        }
        let now = monotonic_now();
        for request in &fx.timers {
            match *request {
                TimerRequest::Arm(t, after) => self.timers.arm(NodeTimer::Site(t), now + after),
                TimerRequest::Cancel(t) => {
                    self.timers.cancel(&NodeTimer::Site(t));
                }
            }
        }
        if let Some(ledger) = &mut self.ledger {
            for report in &fx.reports {
                let seq = ledger.enqueue(*report);
                log::info!(
                    "{}: report {seq} {} queued for the hub",
                    report.module().key(),
                    report.wire()
                );
            }
            if let Some(office) = &self.site.office {
                ledger.set_office_occupied(office.occupied());
            }
            ledger.set_rule_states(self.site.rule_states());
        }
        caused
    }

    /// Sends each link's next report if it can go.
    fn pump(&mut self, registry: &Registry) {
        for slot in 0..self.links.len() {
            let Some(ledger) = &self.ledger else { return };
            let (module, link) = &mut self.links[slot];
            let outcome = link.pump(ledger.outbox(*module), registry);
            self.after_link(slot, outcome);
        }
    }

    fn after_link(&mut self, slot: usize, outcome: LinkOutcome) {
        let (module, _) = self.links[slot];
        if let Some(ledger) = &mut self.ledger {
            for seq in &outcome.acked {
                log::info!("{}: hub acknowledged report {seq}", module.key());
                ledger.acknowledged(module, *seq);
            }
        }
        if let Some(wait) = outcome.retry_in {
            self.timers
                .arm(NodeTimer::LinkRetry(slot), monotonic_now() + wait);
        }
    }

    pub fn on_link(&mut self, slot: usize, registry: &Registry) {
        let Some((_, link)) = self.links.get_mut(slot) else {
            return;
        };
        let outcome = link.ready(registry);
        self.after_link(slot, outcome);
        self.pump(registry);
    }

    /// New hub connections. Returns true if more may be waiting (the accept budget ran out).
    pub fn on_hub_listener(&mut self, registry: &Registry) -> bool {
        let Some(hub) = &mut self.hub else {
            return false;
        };
        let more = hub.accept(registry);
        if hub.has_unregistered() && !self.timers.is_armed(&NodeTimer::HubSweep) {
            // Nobody older is waiting, so the newest is the next one due.
            self.timers.arm(
                NodeTimer::HubSweep,
                monotonic_now() + crate::hub::server::REGISTER_TIMEOUT,
            );
        }
        more
    }

    /// A hub client sent something. Returns true if more is waiting (the read budget ran
    /// out), so the loop comes back after the other sources have had their turn.
    pub fn on_hub_conn(
        &mut self,
        index: usize,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) -> bool {
        let Some(hub) = &mut self.hub else {
            return false;
        };
        let read = hub.readable(index, registry);
        self.apply_reports(read.reports, registry);
        self.arm_quiet(index);
        self.collect_commands();
        self.collect_readings(devices, hw, registry);
        read.more
    }

    /// Step 5 on the hub's side: reports go to the ledger, and whatever can be answered at
    /// once (a resend of what is already on disk) is answered now.
    fn apply_reports(&mut self, reports: Vec<IncomingReport>, registry: &Registry) {
        let (Some(hub), Some(ledger)) = (&mut self.hub, &mut self.ledger) else {
            return;
        };
        for report in &reports {
            ledger.apply_report(
                report.conn,
                &report.client,
                &report.epoch,
                report.seq,
                report.report,
            );
        }
        for conn in hub.take_closed() {
            ledger.connection_closed(conn);
        }
        if !reports.is_empty() {
            self.release(registry);
        }
    }

    /// JSON readings that came over TCP lines.
    fn collect_readings(
        &mut self,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) {
        if let Some(hub) = &mut self.hub {
            let readings = hub.take_readings();
            self.on_readings(&readings, devices, hw, registry);
        }
    }

    /// `sitectl send`: the answer comes later, through [`Node::take_replies`].
    pub fn send(
        &mut self,
        device: &str,
        command: &str,
        timeout: Duration,
        asker: Asker,
        registry: &Registry,
    ) -> Result<(), String> {
        let hub = self
            .hub
            .as_mut()
            .ok_or("this node runs no hub, so no devices are connected to it")?;
        hub.send_command(device, command, timeout, asker, registry)?;
        self.collect_commands();
        Ok(())
    }

    /// Arms timeouts for commands just sent and turns finished ones into answers.
    fn collect_commands(&mut self) {
        let Some(hub) = &mut self.hub else { return };
        let now = monotonic_now();
        for (index, id, timeout) in hub.take_started() {
            self.timers
                .arm(NodeTimer::Command(index, id), now + timeout);
        }
        for done in hub.take_done() {
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

    /// Answers to deliver to control connections.
    pub fn take_replies(&mut self) -> Vec<(Asker, Response)> {
        std::mem::take(&mut self.replies)
    }

    /// Unterminated input waits [`crate::hub::server::QUIET`] before it counts as a line.
    fn arm_quiet(&mut self, index: usize) {
        let partial = self
            .hub
            .as_ref()
            .and_then(|h| h.partial_deadline(index))
            .is_some();
        if partial {
            self.timers.arm(
                NodeTimer::HubQuiet(index),
                monotonic_now() + crate::hub::server::QUIET,
            );
        }
    }

    /// Sensor datagrams arrived: readings are stored and go to the rules, closed cycles are
    /// answered.
    /// Returns true if more datagrams are waiting (the batch budget ran out).
    pub fn on_udp(
        &mut self,
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) -> bool {
        let Some(sensors) = &mut self.sensors else {
            return false;
        };
        let (readings, more) = sensors.readable(monotonic_now());
        self.on_readings(&readings, devices, hw, registry);
        self.arm_stream_gap();
        more
    }

    /// Keeps the gap timer at or before the earliest open cycle's deadline. Packets only move
    /// deadlines later, so an armed earlier timer is left alone (it re-arms when it fires):
    /// under a stream of datagrams this is no heap work per wake-up.
    fn arm_stream_gap(&mut self) {
        let armed = self.timers.deadline_of(&NodeTimer::StreamGap);
        match self.sensors.as_ref().and_then(SensorHub::next_deadline) {
            Some(at) if armed.is_none_or(|armed| at < armed) => {
                self.timers.arm(NodeTimer::StreamGap, at)
            }
            Some(_) => {}
            None => {
                self.timers.cancel(&NodeTimer::StreamGap);
            }
        }
    }

    /// `sitectl devices`, a page at a time: registered TCP clients by name, then UDP senders
    /// by name. The cursor (`next`, then `after`) is `tcp:<name>` or `udp:<host> <name>`.
    pub fn devices(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<site_proto::Page<serde_json::Value>, String> {
        let Some(hub) = &self.hub else {
            return Err("this node runs no hub, so no devices report to it".into());
        };
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
        if udp_after.is_none() {
            let clients = hub.clients(tcp_after, limit);
            // A full page ends here; the next starts after its last client, with the rest of
            // the clients or, if none, the first senders.
            let senders = self.sensors.as_ref().map_or(0, |s| s.sender_count());
            if clients.len() == limit
                && let Some(last) = clients.last()
                && (senders > 0 || !hub.clients(Some(&last.name), 1).is_empty())
            {
                next = Some(format!("tcp:{}", last.name));
            }
            list.extend(clients.into_iter().map(|c| {
                serde_json::json!({
                    "name": c.name, "type": c.kind, "via": "tcp", "address": c.address,
                    "state": "connected", "connected_secs": c.connected_secs, "last_seen": c.last_seen,
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
        let total = hub.client_count() + self.sensors.as_ref().map_or(0, |s| s.sender_count());
        Ok(site_proto::Page {
            items: serde_json::json!({ "devices": list }),
            total,
            next,
        })
    }

    /// `sitectl sensors`: the latest readings, a page of devices at a time, by name.
    pub fn sensors_page(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<site_proto::Page<serde_json::Value>, String> {
        if self.hub.is_none() {
            return Err("this node runs no hub, so no sensors report to it".into());
        }
        let limit = limit
            .unwrap_or(site_proto::MAX_PAGE)
            .clamp(1, site_proto::MAX_PAGE);
        let (page, next) = self.readings.page(after, limit);
        Ok(site_proto::Page {
            items: serde_json::json!({ "sensors": page }),
            total: self.readings.count(),
            next,
        })
    }

    /// Keeps the latest value of each reading, and hands each to the rules, whose commands go
    /// to the devices like the site modules' do.
    fn on_readings(
        &mut self,
        readings: &[Reading],
        devices: &mut Devices,
        hw: &mut dyn Hardware,
        registry: &Registry,
    ) {
        if readings.is_empty() {
            return;
        }
        let at = std::time::SystemTime::now();
        let mut caused = Vec::new();
        for reading in readings {
            log::debug!(
                "hub: reading {} {}={}",
                reading.device,
                reading.quantity,
                reading.value
            );
            self.readings.store(reading, at);
            if !self.site.rules.is_empty() {
                let mut fx =
                    self.site
                        .on_reading(&reading.device, &reading.quantity, reading.value);
                // Any sensor (or anyone posing as one) can flip a rule with each datagram:
                // what that logs is rate-limited.
                for (level, note) in fx.notes.drain(..) {
                    let level = match level {
                        NoteLevel::Info => log::Level::Info,
                        NoteLevel::Warn => log::Level::Warn,
                    };
                    crate::log_limited!(self.reading_log_limit, level, "{note}");
                }
                caused.extend(self.apply(fx, devices, hw));
            }
        }
        self.on_device_events(&mut caused, devices, hw, registry);
    }

    /// `"sensors"` for status, on a node that runs the hub.
    pub fn sensors(
        &self,
    ) -> Option<
        std::collections::BTreeMap<
            String,
            std::collections::BTreeMap<String, site_proto::SensorReading>,
        >,
    > {
        self.hub
            .as_ref()
            .map(|_| self.readings.page(None, site_proto::STATUS_LIST).0)
    }

    /// How many devices have readings, on a node that runs the hub.
    pub fn sensor_count(&self) -> Option<usize> {
        self.hub.as_ref().map(|_| self.readings.count())
    }

    /// The writer finished something: send the answers and reports that waited on it.
    pub fn on_store(&mut self, registry: &Registry) {
        self.release(registry);
    }

    /// End of a turn of the loop: this turn's changes go to the writer as one snapshot, and
    /// the turn's device-log lines with them.
    pub fn flush(&mut self) {
        if let Some(ledger) = &mut self.ledger {
            ledger.flush();
            if let Some(hub) = &mut self.hub {
                let lines = hub.take_device_log();
                if !lines.is_empty() {
                    ledger.device_log(lines);
                }
            }
        }
    }

    /// Hub connections that stopped for backpressure and may be read again.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        self.hub
            .as_mut()
            .map(HubServer::take_resumed)
            .unwrap_or_default()
    }

    /// Event-log lines that reached the disk since the last look (for `sitectl log -f`).
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    /// Sends what the disk has caught up with: the hub's answers, and the links' reports.
    fn release(&mut self, registry: &Registry) {
        let Some(ledger) = &mut self.ledger else {
            return;
        };
        let released = ledger.released();
        if let Some(hub) = &mut self.hub {
            for (conn, reply) in &released.acks {
                hub.answer(*conn, reply, registry);
            }
        }
        for (module, seq) in &released.durable {
            for (m, link) in &mut self.links {
                if m == module {
                    link.set_durable(*seq);
                }
            }
        }
        self.lines.extend(released.lines);
        self.pump(registry);
    }

    pub fn next_deadline(&mut self) -> Option<Duration> {
        self.timers.next_deadline()
    }

    pub fn fire_due(&mut self, devices: &mut Devices, hw: &mut dyn Hardware, registry: &Registry) {
        let now = monotonic_now();
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                NodeTimer::Site(t) => {
                    let fx = self.site.on_timer(t);
                    let mut caused = self.apply(fx, devices, hw);
                    self.on_device_events(&mut caused, devices, hw, registry);
                }
                NodeTimer::LinkRetry(slot) => {
                    if let Some((_, link)) = self.links.get_mut(slot)
                        && let Err(wait) = link.connect(registry)
                    {
                        self.timers.arm(NodeTimer::LinkRetry(slot), now + wait);
                    }
                }
                NodeTimer::HubQuiet(index) => {
                    if let Some(hub) = &mut self.hub {
                        let reports = hub.quiet(index, registry);
                        self.apply_reports(reports, registry);
                    }
                    self.arm_quiet(index);
                    self.collect_commands();
                    self.collect_readings(devices, hw, registry);
                }
                NodeTimer::Command(index, id) => {
                    if let Some(hub) = &mut self.hub {
                        hub.command_timeout(index, id, registry);
                    }
                    self.collect_commands();
                }
                NodeTimer::StreamGap => {
                    if let Some(sensors) = &mut self.sensors {
                        sensors.expire(now);
                    }
                    self.arm_stream_gap();
                }
                NodeTimer::HubSweep => {
                    if let Some(hub) = &mut self.hub
                        && let Some(next) = hub.expire_unregistered(registry)
                    {
                        let wait = next.saturating_duration_since(std::time::Instant::now());
                        self.timers.arm(NodeTimer::HubSweep, now + wait);
                    }
                }
            }
        }
        self.pump(registry);
    }

    /// `status` additions: staff (on a hub), the site modules, hub clients and links.
    pub fn status(
        &self,
    ) -> (
        Option<u64>,
        site_proto::SiteStatus,
        Option<site_proto::HubStatus>,
    ) {
        let staff = self
            .hub
            .as_ref()
            .and(self.ledger.as_ref())
            .map(|l| l.state().staff);
        let mut site = self.site.status();
        if let Some(ledger) = &self.ledger {
            for (module, link) in &self.links {
                let link = Some(link.status(ledger.outbox(*module).len()));
                // A link belongs to a module this node runs.
                match module {
                    Module::Access => {
                        if let Some(access) = &mut site.access {
                            access.link = link;
                        }
                    }
                    Module::Emergency => {
                        if let Some(emergency) = &mut site.emergency {
                            emergency.link = link;
                        }
                    }
                }
            }
        }
        let hub = self.hub.as_ref().map(|h| site_proto::HubStatus {
            listen: h.local_addr().to_string(),
            clients: h.clients(None, site_proto::STATUS_LIST),
            client_count: h.client_count(),
            udp: self.sensors.as_ref().map(|s| s.streams()),
        });
        (staff, site, hub)
    }

    /// The writer's health, on a node that persists anything.
    pub fn store(&self) -> Option<site_proto::StoreStatus> {
        let ledger = self.ledger.as_ref()?;
        Some(site_proto::StoreStatus {
            stalled: ledger
                .stalls()
                .iter()
                .map(|s| site_proto::StoreStall {
                    file: s.file.display().to_string(),
                    since: crate::hub::stream::local_time(s.since),
                    error: s.error.clone(),
                    best_effort: s.best_effort,
                })
                .collect(),
        })
    }

    /// The event log's last `n` lines (on a node that runs the hub).
    pub fn log_tail(&self, n: usize) -> Result<Vec<String>, String> {
        let path = self
            .ledger
            .as_ref()
            .and_then(|l| l.event_log())
            .ok_or("this node runs no hub, so it keeps no event log (ask the hub's sited)")?;
        crate::store::tail_lines(path, n).map_err(|e| format!("reading {}: {e}", path.display()))
    }

    pub fn reset_count(&mut self, uid: u32) -> Result<u64, String> {
        match (&self.hub, &mut self.ledger) {
            (Some(_), Some(ledger)) => Ok(ledger.reset_count(uid)),
            _ => Err("this node runs no hub, so it keeps no staff count".into()),
        }
    }

    pub fn reopen_log(&mut self) {
        if let Some(ledger) = &mut self.ledger {
            ledger.reopen_log();
        }
    }

    /// At stop: the writer finishes what is queued.
    pub fn finish(&mut self) {
        self.flush();
        if let Some(ledger) = &mut self.ledger {
            ledger.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_becomes_a_valid_registration_name() {
        assert_eq!(link_name_base("front-door"), "front-door");
        // The kernel's name for a machine without one (a bare VM, an initramfs).
        assert_eq!(link_name_base("(none)"), "sited");
        assert_eq!(link_name_base(""), "sited");
        assert_eq!(link_name_base("Büro Pi"), "B-ro-Pi");
        assert_eq!(link_name_base(&"x".repeat(80)).len(), 48);
        for host in ["(none)", "Büro Pi", "a b", "pi.local"] {
            let name = format!("{}-access", link_name_base(host));
            assert!(
                matches!(
                    crate::hub::protocol::parse(&format!("DEVICE {name} TYPE access-control")),
                    Ok(crate::hub::protocol::Line::Register { .. })
                ),
                "{name}"
            );
        }
    }
}
