//! The site runner (DESIGN.md §3 steps 3 and 5): the site modules this node's config has
//! sections for (`site/`, pure state machines), their links to their hubs, and the ledger
//! they and the hub persist through. It touches no device: a device event, a reading or a
//! timer goes in, and the commands for the devices come back for the loop to carry out. Its
//! timers are asks for the loop's heap.

use crate::config::{Config, HubTarget, site::parse_target};
use crate::conn_io::TokenRange;
use crate::devices::DeviceEvent;
use crate::hub::link::{HubLink, LinkKey, LinkOutcome, LinkSpec};
use crate::hub::protocol;
use crate::hub::server::{ConnRef, IncomingReport, Reply};
use crate::hub::stream::Reading;
use crate::ledger::Ledger;
use crate::rate_limit::RateLimit;
use crate::site::access::{AccessConfig, AccessControl};
use crate::site::emergency::{Emergency, EmergencyConfig};
use crate::site::office::{Office, OfficeConfig};
use crate::site::rules::{Rule, RuleConfig, RuleState};
use crate::site::{Command, Effects, Module, NoteLevel, Site, SiteTimer, TimerRequest};
use crate::timers::{TimerAsk, TimerAsks, monotonic_now};
use mio::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// This node's own hub, where modules without a hub of their own report, and the key this
/// daemon keeps for itself to authenticate its modules there.
#[derive(Clone, Debug)]
pub struct OwnHub {
    pub addr: SocketAddr,
    pub key: crate::keys::Key,
}

/// The runner's timers, in the loop's heap. Each carries the generation of the site it was
/// armed for: a reload builds a new site and new links, and the old ones' timers are void.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunnerTimer {
    Site(u64, SiteTimer),
    /// A link's next connection attempt.
    LinkRetry(u64, usize),
    /// A link's next heartbeat.
    LinkPing(u64, usize),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ledger(#[from] crate::ledger::Error),
    #[error("{0}")]
    Config(String),
}

pub struct SiteRunner {
    site: Site,
    /// The state file and event log; none on a node that runs neither modules nor a hub.
    ledger: Option<Ledger>,
    links: Vec<(Module, HubLink)>,
    link_tokens: TokenRange,
    /// Bumped by each (re)build of the site (see [`RunnerTimer`]).
    generation: u64,
    /// Bumped by each (re)build of the links (their retries are void then).
    link_generation: u64,
    timers: TimerAsks<RunnerTimer>,
    /// Event-log lines that reached the disk, for `sitectl log -f`.
    lines: Vec<String>,
    /// What the modules said, logged once their commands are carried out (see
    /// [`SiteRunner::write_log`]).
    words: Vec<(log::Level, String)>,
    /// What readings make the rules log (a client can send them as fast as it likes).
    reading_log_limit: RateLimit,
}

fn hostname() -> String {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    link_name_base(&raw)
}

/// Checks what the links of `config` would be made from (their hubs, their secret files)
/// without touching the running ones: a reload checks everything before it applies anything.
pub fn check_links(config: &Config, own_hub: Option<&OwnHub>) -> Result<(), Error> {
    link_specs(config, own_hub).map(|_| ())
}

/// What each module's link is made from: its hub (its own `hub`, `[link] hub`, or this
/// node's, which it reaches with this daemon's own key), its registration name (as set, else
/// `<[link] name or host>-<module>`), and the key it proves itself with (`[link]`'s, read
/// from its secret file now).
fn link_specs(config: &Config, own_hub: Option<&OwnHub>) -> Result<Vec<(Module, LinkSpec)>, Error> {
    let link = config.link.as_ref();
    let link_key = match link.and_then(|l| l.name.as_ref().zip(l.secret_file.as_ref())) {
        Some((name, file)) => Some(LinkKey {
            name: name.clone(),
            secret: crate::keys::read_secret_file(file).map_err(Error::Config)?,
        }),
        None => None,
    };
    let base = link.and_then(|l| l.name.clone()).unwrap_or_else(hostname);
    let fingerprint = link.and_then(|l| l.fingerprint.as_deref());
    let mut specs = Vec::new();
    let modules = [
        config
            .access
            .as_ref()
            .map(|a| (Module::Access, &a.hub, &a.name, protocol::TYPE_ACCESS)),
        config
            .emergency
            .as_ref()
            .map(|e| (Module::Emergency, &e.hub, &e.name, protocol::TYPE_EMERGENCY)),
    ];
    for (module, hub, name, kind) in modules.into_iter().flatten() {
        let (target, key, heartbeat) = match config.module_hub(hub) {
            Some(text) => (
                parse_target(text, fingerprint).map_err(Error::Config)?,
                link_key.clone(),
                Some(link.map_or(Duration::from_secs(5), |l| l.heartbeat())),
            ),
            None => {
                let own = own_hub.ok_or_else(|| {
                    Error::Config(format!("[{}] has no hub to report to", module.key()))
                })?;
                let key = LinkKey {
                    name: own.key.name.clone(),
                    secret: own.key.secret.clone(),
                };
                (HubTarget::Plain(own.addr), Some(key), None)
            }
        };
        let name = name
            .clone()
            .unwrap_or_else(|| format!("{base}-{}", module.key()));
        specs.push((
            module,
            LinkSpec {
                name,
                kind,
                target,
                key,
                heartbeat,
            },
        ));
    }
    Ok(specs)
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

impl SiteRunner {
    /// Opens the ledger (if this node runs modules or a hub: `runs_hub`), builds the modules
    /// and their links, and derives the outputs from the inputs as they are now (`state_of`)
    /// and the persisted state; a cycle in progress is never resumed. Returns the runner and
    /// the commands that puts the outputs in. `own_hub` is this node's hub, where links
    /// without a `hub` of their own report.
    pub fn start(
        config: &Config,
        own_hub: Option<&OwnHub>,
        state_of: impl Fn(&str) -> Option<String>,
        registry: &Registry,
        link_tokens: TokenRange,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<(SiteRunner, Vec<Command>), Error> {
        let mut runner = SiteRunner {
            site: Site::default(),
            ledger: None,
            links: Vec::new(),
            link_tokens,
            generation: 0,
            link_generation: 0,
            timers: TimerAsks::default(),
            lines: Vec::new(),
            words: Vec::new(),
            reading_log_limit: RateLimit::new(30, Duration::from_secs(10)),
        };
        let runs_site =
            config.access.is_some() || config.emergency.is_some() || config.office.is_some();
        if !runs_site && config.hub.is_none() {
            return Ok((runner, Vec::new()));
        }
        let event_log = config.hub.as_ref().map(|h| h.event_log.as_path());
        let device_log = config.hub.as_ref().and_then(|h| h.device_log.as_deref());
        runner.ledger = Some(Ledger::open(
            &config.daemon.state_dir,
            event_log,
            device_log,
            wake,
        )?);
        runner.build_site(config, own_hub, registry)?;
        let fx = runner.site.start(state_of);
        let commands = runner.apply(fx);
        Ok((runner, commands))
    }

    fn build_site(
        &mut self,
        config: &Config,
        own_hub: Option<&OwnHub>,
        registry: &Registry,
    ) -> Result<(), Error> {
        let state = self
            .ledger
            .as_ref()
            .map(|l| l.state().clone())
            .unwrap_or_default();
        let epoch = self
            .ledger
            .as_ref()
            .map(|l| l.epoch().to_string())
            .unwrap_or_default();
        let specs = link_specs(config, own_hub)?;
        // The old modules' timers are void.
        self.generation += 1;
        self.site.access = config.access.as_ref().map(|a| {
            AccessControl::new(AccessConfig {
                entry_button: a.entry_button.clone(),
                exit_button: a.exit_button.clone(),
                entry_door: a.entry_door.clone(),
                exit_door: a.exit_door.clone(),
                entry_led: a.entry_led.clone(),
                exit_led: a.exit_led.clone(),
                open: Duration::from_secs_f64(a.open_secs),
            })
        });
        self.site.emergency = config.emergency.as_ref().map(|e| {
            Emergency::new(
                EmergencyConfig {
                    door: e.door.clone(),
                    siren: e.siren.clone(),
                },
                state.emergency_reported_open,
            )
        });
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
        self.connect_links(specs, epoch, registry)
    }

    /// Replaces the links with ones made from `specs` and starts connecting them.
    fn connect_links(
        &mut self,
        specs: Vec<(Module, LinkSpec)>,
        epoch: String,
        registry: &Registry,
    ) -> Result<(), Error> {
        if specs.len() > self.link_tokens.len {
            return Err(Error::Config("more hub links than tokens for them".into()));
        }
        // The old links' sockets close as they are dropped; their retries are void.
        self.links.clear();
        self.link_generation += 1;
        for (slot, (module, spec)) in specs.into_iter().enumerate() {
            let token = self.link_tokens.token(slot);
            let mut link = HubLink::new(module.key(), spec, epoch.clone(), token);
            if let Some(ledger) = &self.ledger {
                link.set_durable(ledger.durable_seq(module));
            }
            if let Err(wait) = link.connect(registry) {
                self.timers.arm(
                    RunnerTimer::LinkRetry(self.link_generation, slot),
                    monotonic_now() + wait,
                );
            }
            if let Some(every) = link.heartbeat_every() {
                self.timers.arm(
                    RunnerTimer::LinkPing(self.link_generation, slot),
                    monotonic_now() + every,
                );
            }
            self.links.push((module, link));
        }
        Ok(())
    }

    /// After a reload that left the modules alone: the links are made again if what they
    /// are made from changed (`[link]`, or the secret in its secret file, fixed by the
    /// operator). Reports wait in the outbox meanwhile, as in any outage.
    pub fn relink(
        &mut self,
        config: &Config,
        own_hub: Option<&OwnHub>,
        registry: &Registry,
    ) -> Result<(), Error> {
        let specs = link_specs(config, own_hub)?;
        let same = specs.len() == self.links.len()
            && specs
                .iter()
                .zip(&self.links)
                .all(|((m, spec), (module, link))| m == module && *spec == link.spec);
        if same {
            return Ok(());
        }
        log::info!("site: the hub links changed; connecting again");
        let epoch = self
            .ledger
            .as_ref()
            .map(|l| l.epoch().to_string())
            .unwrap_or_default();
        self.connect_links(specs, epoch, registry)?;
        self.pump(registry);
        Ok(())
    }

    /// Re-binds the site modules after a reload (the hub itself needs a restart). Access is
    /// idle with its doors closed afterwards; occupancy, rule states and outboxes carry over. A
    /// device that a removed rule drove, and that nothing drives now, is switched off.
    pub fn reload(
        &mut self,
        config: &Config,
        own_hub: Option<&OwnHub>,
        state_of: impl Fn(&str) -> Option<String>,
        registry: &Registry,
    ) -> Result<Vec<Command>, Error> {
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
        self.build_site(config, own_hub, registry)?;
        let mut fx = self.site.start(&state_of);
        for device in ruled {
            let still_driven = fx.commands.iter().any(|c| c.device == device);
            if !still_driven && state_of(&device).is_some() {
                fx.info(format!("{device}: no rule drives it any more; off"));
                fx.command(&device, "off");
            }
        }
        Ok(self.apply(fx))
    }

    /// Step 3: a device event goes to the site modules; their commands come back.
    pub fn on_device_event(&mut self, event: &DeviceEvent) -> Vec<Command> {
        self.say(
            log::Level::Info,
            format!("{}: {}", event.device, event.event),
        );
        let fx = self.site.on_device(&event.device, &event.event);
        self.apply(fx)
    }

    /// Fresh readings go to the rules; their commands come back. Any sensor (or anyone
    /// posing as one) can flip a rule with each datagram, so what that logs is rate-limited.
    pub fn on_readings(&mut self, readings: &[Reading]) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.site.rules.is_empty() {
            return commands;
        }
        for reading in readings {
            let mut fx = self
                .site
                .on_reading(&reading.device, &reading.quantity, reading.value);
            for (level, note) in fx.notes.drain(..) {
                let level = match level {
                    NoteLevel::Info => log::Level::Info,
                    NoteLevel::Warn => log::Level::Warn,
                };
                crate::log_limited!(self.reading_log_limit, level, "{note}");
            }
            commands.extend(self.apply(fx));
        }
        commands
    }

    /// One of the runner's timers fired; the commands it led to come back.
    pub fn on_timer(&mut self, timer: RunnerTimer, registry: &Registry) -> Vec<Command> {
        let mut commands = Vec::new();
        match timer {
            RunnerTimer::Site(generation, t) if generation == self.generation => {
                let fx = self.site.on_timer(t);
                commands = self.apply(fx);
            }
            RunnerTimer::LinkRetry(generation, slot) if generation == self.link_generation => {
                if let Some((_, link)) = self.links.get_mut(slot)
                    && let Err(wait) = link.connect(registry)
                {
                    self.timers.arm(timer, monotonic_now() + wait);
                }
            }
            RunnerTimer::LinkPing(generation, slot) if generation == self.link_generation => {
                if let Some((_, link)) = self.links.get_mut(slot) {
                    let outcome = link.heartbeat(registry);
                    if let Some(wait) = link.next_heartbeat() {
                        self.timers.arm(timer, monotonic_now() + wait);
                    }
                    self.after_link(slot, outcome);
                }
            }
            // Armed for a site a reload has replaced.
            RunnerTimer::Site(..) | RunnerTimer::LinkRetry(..) | RunnerTimer::LinkPing(..) => {}
        }
        self.pump(registry);
        commands
    }

    /// Carries out what a module wants, except its device commands, which are returned for
    /// the loop: notes are logged, timers asked for, reports queued in the outbox, and the
    /// modules' persisted state updated.
    fn apply(&mut self, fx: Effects) -> Vec<Command> {
        for (level, note) in fx.notes {
            let level = match level {
                NoteLevel::Info => log::Level::Info,
                NoteLevel::Warn => log::Level::Warn,
            };
            self.say(level, note);
        }
        let now = monotonic_now();
        for request in &fx.timers {
            match *request {
                TimerRequest::Arm(t, after) => self
                    .timers
                    .arm(RunnerTimer::Site(self.generation, t), now + after),
                TimerRequest::Cancel(t) => {
                    self.timers.cancel(RunnerTimer::Site(self.generation, t))
                }
            }
        }
        if let Some(ledger) = &mut self.ledger {
            for report in &fx.reports {
                let seq = ledger.enqueue(*report);
                self.words.push((
                    log::Level::Info,
                    format!(
                        "{}: report {seq} {} queued for the hub",
                        report.module().key(),
                        report.wire()
                    ),
                ));
            }
            if let Some(office) = &self.site.office {
                ledger.set_office_occupied(office.occupied());
            }
            ledger.set_rule_states(self.site.rule_states());
        }
        fx.commands
    }

    fn say(&mut self, level: log::Level, text: String) {
        self.words.push((level, text));
    }

    /// Logs what the modules said. The loop calls it once it has carried out their commands:
    /// a line to the journal is a write system call, and the door or the siren does not
    /// wait for the words about it.
    pub fn write_log(&mut self) {
        for (level, text) in self.words.drain(..) {
            log::log!(level, "{text}");
        }
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
            self.timers.arm(
                RunnerTimer::LinkRetry(self.link_generation, slot),
                monotonic_now() + wait,
            );
        }
    }

    /// A link's socket is ready: the hub's answers are taken, the next report sent.
    pub fn on_link(&mut self, slot: usize, registry: &Registry) {
        let Some((_, link)) = self.links.get_mut(slot) else {
            return;
        };
        let outcome = link.ready(registry);
        self.after_link(slot, outcome);
        self.pump(registry);
    }

    /// Step 5 on the hub's side: reports go to the ledger (each counted once), closed
    /// connections end their epochs, and the answers that can go now (a resend of what is
    /// already on disk) come back for the hub.
    pub fn on_reports(
        &mut self,
        reports: &[IncomingReport],
        closed: &[ConnRef],
        registry: &Registry,
    ) -> Vec<(ConnRef, Reply)> {
        let Some(ledger) = &mut self.ledger else {
            return Vec::new();
        };
        for report in reports {
            ledger.apply_report(
                report.conn,
                &report.client,
                &report.epoch,
                report.seq,
                report.report,
            );
        }
        for conn in closed {
            ledger.connection_closed(*conn);
        }
        if reports.is_empty() {
            return Vec::new();
        }
        self.on_store(registry)
    }

    /// The writer finished something: the links' reports that waited for the disk go out,
    /// new event-log lines are kept for `sitectl log -f`, and the hub's answers that waited
    /// come back for the hub.
    pub fn on_store(&mut self, registry: &Registry) -> Vec<(ConnRef, Reply)> {
        let Some(ledger) = &mut self.ledger else {
            return Vec::new();
        };
        let released = ledger.released();
        for (module, seq) in &released.durable {
            for (m, link) in &mut self.links {
                if m == module {
                    link.set_durable(*seq);
                }
            }
        }
        self.lines.extend(released.lines);
        self.pump(registry);
        released.acks
    }

    /// End of a turn of the loop: this turn's changes go to the writer as one snapshot, and
    /// the hub's device-log lines with them.
    pub fn flush(&mut self, device_log: Vec<String>) {
        if let Some(ledger) = &mut self.ledger {
            ledger.flush();
            if !device_log.is_empty() {
                ledger.device_log(device_log);
            }
        }
    }

    /// Event-log lines that reached the disk since the last look (for `sitectl log -f`).
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    /// The timers asked for since the last look, for the loop's heap.
    pub fn take_timer_asks(&mut self) -> Vec<TimerAsk<RunnerTimer>> {
        self.timers.take()
    }

    /// The staff on the premises (the hub's count, kept in the ledger).
    pub fn staff(&self) -> Option<u64> {
        self.ledger.as_ref().map(|l| l.state().staff)
    }

    /// `"site"` for status: the modules, each link with its outbox.
    pub fn status(&self) -> site_proto::SiteStatus {
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
        site
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

    /// `sitectl count reset` (on the hub): the count before.
    pub fn reset_count(&mut self, uid: u32) -> Option<u64> {
        self.ledger.as_mut().map(|l| l.reset_count(uid))
    }

    pub fn reopen_log(&mut self) {
        if let Some(ledger) = &mut self.ledger {
            ledger.reopen_log();
        }
    }

    /// At stop: the writer finishes what is queued.
    pub fn finish(&mut self, device_log: Vec<String>) {
        self.flush(device_log);
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

    use crate::hub::server::Epoch;
    use crate::site::Report;
    use std::sync::mpsc;

    /// A runner for the seed-000 site (access, emergency, office and a fan rule) whose links
    /// report to `hub`, with its state in `dir`; the receiver hears the writer's wake-ups.
    fn runner(
        dir: &std::path::Path,
        hub: SocketAddr,
        inputs: &[(&str, &str)],
    ) -> (SiteRunner, Vec<Command>, mpsc::Receiver<()>, mio::Poll) {
        let text = format!(
            r#"
[daemon]
control-socket = "{dir}/control.sock"
state-dir = "{dir}/state"
[hardware]
backend = "sim"
[hub]
event-log = "{dir}/events.log"
[access]
open-secs = 1.0
name = "front-access"
[emergency]
[office]
[[rule]]
sensor = "Sensor01"
quantity = "temperature"
above = 25.0
hysteresis = 0.5
device = "office_fan"
{devices}"#,
            dir = dir.display(),
            devices = [
                ("entry_button", "button", 5),
                ("exit_button", "button", 6),
                ("entry_door", "servo", 12),
                ("exit_door", "servo", 13),
                ("entry_led", "led", 17),
                ("exit_led", "led", 27),
                ("emergency_door", "reed", 16),
                ("siren", "siren", 22),
                ("office_door", "reed", 20),
                ("lock_switch", "switch", 21),
                ("office_lock", "relay", 23),
                ("office_light", "relay", 24),
                ("office_fan", "relay", 25),
            ]
            .iter()
            .map(|(name, kind, pin)| {
                format!("[[device]]\nname = \"{name}\"\nkind = \"{kind}\"\npin = {pin}\n")
            })
            .collect::<String>()
        );
        let config = crate::config::parse(&dir.join("site.toml"), &text).expect("config");
        let poll = mio::Poll::new().expect("poll");
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|tx| tx.send(()));
        });
        let state_of = |device: &str| {
            inputs
                .iter()
                .find(|(d, _)| *d == device)
                .map(|(_, state)| state.to_string())
                .or_else(|| Some("off".into()))
        };
        let own = own_hub(hub);
        let (runner, commands) = SiteRunner::start(
            &config,
            Some(&own),
            state_of,
            poll.registry(),
            TokenRange::new(8, 8),
            wake,
        )
        .expect("start");
        (runner, commands, rx, poll)
    }

    fn own_hub(addr: SocketAddr) -> OwnHub {
        OwnHub {
            addr,
            key: crate::keys::Key {
                name: crate::keys::OWN_KEY_NAME.into(),
                role: crate::keys::Role::Node,
                secret: crate::keys::Secret::generate().expect("secret"),
            },
        }
    }

    fn has(commands: &[Command], device: &str, value: &str) -> bool {
        commands
            .iter()
            .any(|c| c.device == device && c.value == value)
    }

    /// The site timers the runner asked for and did not cancel since.
    fn armed_site_timers(runner: &mut SiteRunner) -> Vec<RunnerTimer> {
        let mut armed = Vec::new();
        for ask in runner.take_timer_asks() {
            match ask {
                TimerAsk::Arm(t @ RunnerTimer::Site(..), _) => armed.push(t),
                TimerAsk::Cancel(t) => armed.retain(|a| *a != t),
                TimerAsk::Arm(..) => {}
            }
        }
        armed
    }

    /// Waits for the writer, then takes what it released.
    fn written(
        runner: &mut SiteRunner,
        rx: &mpsc::Receiver<()>,
        poll: &mio::Poll,
    ) -> Vec<(ConnRef, Reply)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let acks = runner.on_store(poll.registry());
            if !acks.is_empty() {
                return acks;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "the writer released nothing");
            let _ = rx.recv_timeout(left);
        }
    }

    #[test]
    fn a_start_puts_the_outputs_where_the_inputs_and_the_state_say() {
        let dir = tempfile::tempdir().expect("dir");
        let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("hub");
        let addr = hub.local_addr().expect("addr");
        let (_, commands, _, _) = runner(dir.path(), addr, &[("emergency_door", "open")]);
        assert!(has(&commands, "siren", "on"), "{commands:?}");
        let (_, commands, _, _) = runner(dir.path(), addr, &[("emergency_door", "closed")]);
        assert!(has(&commands, "siren", "off"), "{commands:?}");
        assert!(has(&commands, "entry_door", "closed"), "{commands:?}");
    }

    #[test]
    fn an_entry_cycle_runs_on_asked_timers_and_queues_entry_for_the_hub() {
        let dir = tempfile::tempdir().expect("dir");
        let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("hub");
        let addr = hub.local_addr().expect("addr");
        let (mut runner, _, _, poll) = runner(dir.path(), addr, &[]);
        runner.take_timer_asks();
        let press = DeviceEvent {
            device: "entry_button".into(),
            event: "pressed".into(),
            at: Duration::ZERO,
        };
        let commands = runner.on_device_event(&press);
        assert!(has(&commands, "entry_door", "open") && has(&commands, "entry_led", "on"));
        let armed = armed_site_timers(&mut runner);
        assert_eq!(armed.len(), 1, "the first door's time");
        let commands = runner.on_timer(armed[0], poll.registry());
        assert!(has(&commands, "entry_door", "closed") && has(&commands, "exit_door", "open"));
        let armed = armed_site_timers(&mut runner);
        assert_eq!(armed.len(), 1, "the second door's time");
        let commands = runner.on_timer(armed[0], poll.registry());
        assert!(has(&commands, "exit_door", "closed"), "{commands:?}");
        let link = runner
            .status()
            .access
            .and_then(|a| a.link)
            .expect("access reports over a link");
        assert_eq!((link.name.as_str(), link.outbox), ("front-access", 1));
        assert_eq!(link.hub, addr.to_string());
    }

    #[test]
    fn a_reload_voids_the_old_sites_timers() {
        let dir = tempfile::tempdir().expect("dir");
        let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("hub");
        let addr = hub.local_addr().expect("addr");
        let (mut runner, _, _, poll) = runner(dir.path(), addr, &[]);
        let press = DeviceEvent {
            device: "entry_button".into(),
            event: "pressed".into(),
            at: Duration::ZERO,
        };
        runner.take_timer_asks();
        runner.on_device_event(&press);
        let old = armed_site_timers(&mut runner);
        // The modules go; the hub stays (it needs a restart to change).
        let fresh = crate::config::parse(
            &dir.path().join("site.toml"),
            &format!(
                "[daemon]\nstate-dir = \"{}/state\"\n[hardware]\nbackend = \"sim\"\n[hub]\nevent-log = \"{}/events.log\"\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .expect("config");
        runner
            .reload(&fresh, Some(&own_hub(addr)), |_| None, poll.registry())
            .expect("reload");
        assert!(
            runner.on_timer(old[0], poll.registry()).is_empty(),
            "a timer of the site before the reload does nothing"
        );
        assert!(runner.status().access.is_none());
    }

    #[test]
    fn a_hub_report_is_counted_once_and_answered_once_on_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("hub");
        let addr = hub.local_addr().expect("addr");
        let (mut runner, _, rx, poll) = runner(dir.path(), addr, &[]);
        let conn = ConnRef {
            index: 0,
            generation: 1,
        };
        let report = IncomingReport {
            conn,
            client: "back-access".into(),
            epoch: Epoch::Node("0123abcd".into()),
            seq: 1,
            report: Report::Entry,
        };
        // Not on disk yet: no answer.
        assert!(
            runner
                .on_reports(std::slice::from_ref(&report), &[], poll.registry())
                .is_empty()
        );
        runner.flush(Vec::new());
        assert_eq!(written(&mut runner, &rx, &poll), vec![(conn, Reply::Ok(1))]);
        assert_eq!(runner.staff(), Some(1));
        // A resend of what is on disk is answered at once and not counted again.
        let acks = runner.on_reports(&[report], &[], poll.registry());
        assert_eq!(acks, vec![(conn, Reply::Ok(1))]);
        assert_eq!(runner.staff(), Some(1));
        let tail = runner.log_tail(5).expect("event log");
        assert!(
            tail[0].contains("entered") && tail[0].ends_with(", 1"),
            "{tail:?}"
        );
    }

    #[test]
    fn a_hot_reading_turns_the_rules_fan_on_and_a_cool_one_off() {
        let dir = tempfile::tempdir().expect("dir");
        let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("hub");
        let addr = hub.local_addr().expect("addr");
        let (mut runner, _, _, _) = runner(dir.path(), addr, &[]);
        let reading = |value| Reading {
            device: "Sensor01".into(),
            quantity: "temperature".into(),
            value,
            seq: None,
        };
        assert!(has(
            &runner.on_readings(&[reading(27.0)]),
            "office_fan",
            "on"
        ));
        assert!(
            runner.on_readings(&[reading(24.8)]).is_empty(),
            "hysteresis"
        );
        assert!(has(
            &runner.on_readings(&[reading(24.0)]),
            "office_fan",
            "off"
        ));
    }
}
