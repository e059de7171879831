//! The one event loop (DESIGN.md §3, §4). Everything happens on this thread, and the flow of
//! one event reads top to bottom in the `on_*` methods below:
//!
//! 1. an edge arrives from the hardware backend ([`Daemon::on_hardware`]);
//! 2. the device registry hands it to the plugin instance that owns the pin (`devices`);
//! 3. the device's events go to the site runner (`runner`, the pure `site/` modules), which
//!    answers with commands ([`Daemon::on_device_events`]);
//! 4. the commands go back out through the plugins to the backend ([`Daemon::carry_out`]);
//! 5. reports wait in the ledger until they are on disk ([`Daemon::on_store`]); a hub
//!    client's lines come in through the hub (`hub::Hub`), its reports go to the ledger and
//!    its readings to the rules, like a device's events ([`Daemon::on_hub_output`]).
//!
//! The hub and the runner never call into the devices: they return what they want done, and
//! the loop does it. There is one timer heap, here; the devices, the hub and the runner ask
//! for timers ([`crate::timers::TimerAsks`]) and get them back under their own keys ([`Key`]).
//! The loop sleeps in `poll` until an fd, a signal or the next timer deadline needs it; an
//! idle daemon wakes only for the watchdog. The control dispatcher is in `requests`.

mod requests;

use crate::config::{self, Config};
use crate::conn_io::TokenRange;
use crate::control::{self, ControlServer};
use crate::devices::{self, DeviceEvent, DeviceTimer, Devices};
use crate::hub::server::Asker;
use crate::hub::{Hub, HubOutput, HubTimer, HubTokens};
use crate::hw::{self, Edge, EdgeSink, Hardware};
use crate::keys::{self, KeyBook, KeySet};
use crate::notify::Notifier;
use crate::plugin_host::Libraries;
use crate::runner::{OwnHub, RunnerTimer, SiteRunner};
use crate::site::Command;
use crate::timers::{Timers, monotonic_now};
use mio::{Events, Interest, Poll, Token, Waker};
use requests::KeyChange;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use site_proto::Response;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every source the loop polls, as a typed token. Fixed sources get small numbers; hub links
/// a few above them; control and hub connections live in their own ranges above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tok {
    Signals,
    /// The one `mio::Waker`: threads (rppal interrupts) and the sim backend wake the loop.
    Waker,
    /// Backends whose edge sources are fds (cdev line requests).
    Hardware,
    ControlListener,
    ControlConn(usize),
    HubListener,
    /// The hub's TLS listener (`[hub] tls`).
    HubTlsListener,
    /// The hub's UDP socket for sensor streams.
    HubUdp,
    /// A client connection to the hub.
    HubConn(usize),
    /// A site module's own connection to its hub.
    LinkConn(usize),
}

/// The token blocks the loop hands its components for their connection tables.
const LINKS: TokenRange = TokenRange::new(8, 8);
const CONTROL_CONNS: TokenRange = TokenRange::new(1 << 16, control::MAX_CONNECTIONS);
const HUB_CONNS: TokenRange = TokenRange::new(1 << 20, 1 << 24);

impl From<Tok> for Token {
    fn from(tok: Tok) -> Token {
        match tok {
            Tok::Signals => Token(0),
            Tok::Waker => Token(1),
            Tok::Hardware => Token(2),
            Tok::ControlListener => Token(3),
            Tok::ControlConn(i) => CONTROL_CONNS.token(i),
            Tok::HubListener => Token(4),
            Tok::HubUdp => Token(5),
            Tok::HubTlsListener => Token(6),
            Tok::HubConn(i) => HUB_CONNS.token(i),
            Tok::LinkConn(i) => LINKS.token(i),
        }
    }
}

impl Tok {
    /// The source behind a raw token; `None` for tokens nobody registered.
    pub fn from_token(token: Token) -> Option<Tok> {
        match token.0 {
            0 => Some(Tok::Signals),
            1 => Some(Tok::Waker),
            2 => Some(Tok::Hardware),
            3 => Some(Tok::ControlListener),
            4 => Some(Tok::HubListener),
            5 => Some(Tok::HubUdp),
            6 => Some(Tok::HubTlsListener),
            _ => LINKS
                .slot(token)
                .map(Tok::LinkConn)
                .or_else(|| HUB_CONNS.slot(token).map(Tok::HubConn))
                .or_else(|| CONTROL_CONNS.slot(token).map(Tok::ControlConn)),
        }
    }
}

/// The loop's own timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LoopTimer {
    Watchdog,
    /// A control request has been half-sent for too long.
    ControlPartial,
    /// A simulated input has had its time to settle (see [`PendingSim`]).
    SimSettled,
}

/// `sitectl sim` on an input inside its debounce lockout: the plugin applies the new level
/// when the lockout ends, so the answer waits for that (at most [`SIM_SETTLE`]) rather than
/// reporting the old state as if it were the result.
struct PendingSim {
    asker: Asker,
    device: String,
    value: String,
    /// The state before the simulated edge; any change means it has been applied.
    before: String,
    deadline: Duration,
}

/// The longest a simulated input may take to show its new state: the longest debounce a
/// plugin allows (1000 ms) and some.
const SIM_SETTLE: Duration = Duration::from_millis(1200);

/// Whose timer a deadline in the loop's one heap is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Loop(LoopTimer),
    Device(DeviceTimer),
    Hub(HubTimer),
    Site(RunnerTimer),
}

/// Device events handled per turn. Commands can cause device events (rarely), and those can
/// cause commands: a site that kept doing that would otherwise hold the loop. What is left
/// waits for the next turn, after the other sources have had theirs; nothing is dropped.
const EVENTS_PER_TURN: usize = 1024;

/// Within a busy turn the backend is asked for edges at most this often (one system call
/// when there are none; see [`Daemon::edges_meanwhile`]).
const EDGE_CHECK: Duration = Duration::from_micros(25);

/// The hub, where this node's modules reach it, and its keys file.
type StartedHub = (Option<Hub>, Option<OwnHub>, Option<KeyBook<KeyChange>>);

/// Starts the hub with its keys: the keys file's (refused if others may read it) and the
/// daemon's own, which its own modules authenticate with; and the writer `sitectl key`
/// changes the file through.
fn start_hub(
    config: &Config,
    h: &config::HubSection,
    registry: &mio::Registry,
    wake: Arc<dyn Fn() + Send + Sync>,
) -> Result<StartedHub, crate::hub::Error> {
    let path = config.keys_file().unwrap_or_default();
    let file_keys = keys::load(&path).map_err(crate::hub::Error::Config)?;
    let own = keys::own_key(&config.daemon.state_dir).map_err(crate::hub::Error::Config)?;
    log::info!(
        "hub: {} key(s) in {}; clients without a key may {}",
        file_keys.len(),
        path.display(),
        match h.anonymous() {
            None => "do nothing on the plain port".to_string(),
            Some(role) => format!("act as {role} on the plain port"),
        }
    );
    let cert = match &h.tls {
        Some(_) => Some(
            crate::tls::load_or_make(
                h.tls_cert.as_deref(),
                h.tls_key.as_deref(),
                &config.daemon.state_dir,
            )
            .map_err(|e| crate::hub::Error::Config(format!("hub: {e}")))?,
        ),
        None => None,
    };
    let tokens = HubTokens {
        listener: Tok::HubListener.into(),
        tls_listener: Tok::HubTlsListener.into(),
        udp: Tok::HubUdp.into(),
        conns: HUB_CONNS,
    };
    let key_set = KeySet::new(file_keys.clone(), Some(own.clone()));
    let hub = Hub::start(h, key_set, cert, registry, tokens)?;
    let book = KeyBook::start(path, file_keys, wake).map_err(|e| {
        crate::hub::Error::Config(format!("hub: cannot start the keys writer: {e}"))
    })?;
    let own_hub = OwnHub {
        addr: hub.local_addr(),
        key: own,
    };
    Ok((Some(hub), Some(own_hub), Some(book)))
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::Error),
    #[error("hardware: {0}")]
    Hardware(#[from] hw::Error),
    #[error("{0}")]
    Control(#[from] control::Error),
    #[error("{0}")]
    Hub(#[from] crate::hub::Error),
    #[error("{0}")]
    Site(#[from] crate::runner::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

pub struct Daemon {
    poll: Poll,
    /// Kept alive for the backends that hold clones.
    _waker: Arc<Waker>,
    signals: Signals,
    config: Config,
    /// What board detection read at start, for `sitectl status`.
    board: hw::board::Board,
    hw: Box<dyn Hardware>,
    libs: Libraries,
    devices: Devices,
    /// The TCP and UDP hub, if `[hub]`.
    hub: Option<Hub>,
    /// Where this node's own modules reach its hub, and the key they prove themselves with.
    own_hub: Option<OwnHub>,
    /// The hub's keys file, changed by `sitectl key` on its own thread.
    keys: Option<KeyBook<KeyChange>>,
    /// The site modules, their links and the ledger.
    runner: SiteRunner,
    control: ControlServer,
    timers: Timers<Key>,
    notifier: Notifier,
    watchdog: Option<Duration>,
    started: Instant,
    stopping: bool,
    edges: Vec<Edge>,
    /// When the backend was last asked for edges (see [`Daemon::edges_meanwhile`]).
    edges_checked: Instant,
    /// Device events not yet handed to the site runner.
    events: Vec<DeviceEvent>,
    pending_sims: Vec<PendingSim>,
}

impl Daemon {
    /// Loads the config, opens the hardware, creates every device (outputs at their safe level
    /// first), starts the hub and the site, and binds the control socket. Nothing is
    /// half-started on error.
    pub fn start(config_path: &Path) -> Result<Daemon, StartError> {
        match crate::limits::raise_fd_limit() {
            Ok(limit) => log::info!("open-file limit: {limit}"),
            Err(e) => log::warn!("could not raise the open-file limit: {e}"),
        }
        let mut libs = Libraries::new();
        let config = config::load(config_path)?;
        devices::check(&config, &mut libs)?;
        let operator_gid = control::operator_gid(config.daemon.operator_group.as_deref())?;

        let poll = Poll::new().map_err(io_err("creating the event loop"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), Tok::Waker.into()).map_err(io_err("creating the waker"))?,
        );
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(io_err("installing signal handlers"))?;
        poll.registry()
            .register(&mut signals, Tok::Signals.into(), Interest::READABLE)
            .map_err(io_err("registering signals"))?;

        let board = hw::board::Board::detect();
        log::info!("board: {} (read {})", board.describe(), board.evidence());
        let mut hw = hw::open(
            &config.hardware.backend,
            config.hardware.chip.as_deref(),
            config.hardware.pwm_chip.as_deref(),
            config.hardware.sim_pins.as_deref(),
            config.hardware.sim_wire.as_deref(),
            &board,
        )?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(io_err("cloning the registry"))?;
        hw.attach(EdgeSink {
            registry,
            token: Tok::Hardware.into(),
            waker: waker.clone(),
        })?;
        log::info!("hardware backend: {}", hw.name());

        let mut devices = Devices::create_all(&config, &mut libs, hw.as_mut());
        let mut stop_devices = |devices: &mut Devices, e: StartError| {
            devices.shutdown(hw.as_mut());
            e
        };
        let wake_store = waker.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = wake_store.wake();
        });
        let (hub, own_hub, keys) = match &config.hub {
            Some(h) => match start_hub(&config, h, poll.registry(), wake.clone()) {
                Ok(started) => started,
                Err(e) => return Err(stop_devices(&mut devices, e.into())),
            },
            None => (None, None, None),
        };
        let (mut runner, commands) = match SiteRunner::start(
            &config,
            own_hub.as_ref(),
            |d| devices.state_of(d),
            poll.registry(),
            LINKS,
            wake,
        ) {
            Ok(started) => started,
            Err(e) => return Err(stop_devices(&mut devices, e.into())),
        };
        let control = match ControlServer::bind(
            &config.daemon.control_socket,
            operator_gid,
            poll.registry(),
            Tok::ControlListener.into(),
            CONTROL_CONNS,
        ) {
            Ok(c) => c,
            Err(e) => {
                runner.write_log();
                runner.finish(Vec::new());
                return Err(stop_devices(&mut devices, e.into()));
            }
        };

        let notifier = Notifier::from_env();
        let watchdog = crate::notify::watchdog_interval();
        let mut timers = Timers::new();
        if let Some(every) = watchdog {
            timers.arm(Key::Loop(LoopTimer::Watchdog), monotonic_now() + every);
        }
        let mut daemon = Daemon {
            poll,
            _waker: waker,
            signals,
            config,
            board,
            hw,
            libs,
            devices,
            hub,
            own_hub,
            keys,
            runner,
            control,
            timers,
            notifier,
            watchdog,
            started: Instant::now(),
            stopping: false,
            edges: Vec::new(),
            edges_checked: Instant::now(),
            events: Vec::new(),
            pending_sims: Vec::new(),
        };
        // The outputs the inputs and the persisted state call for (doors closed, the siren
        // if the emergency door is open, ...).
        daemon.carry_out(commands);
        daemon.on_device_events();
        Ok(daemon)
    }

    /// The control socket's path (printed at start so a demo user knows where to point sitectl).
    pub fn control_socket(&self) -> &Path {
        self.control.path()
    }

    /// Runs until SIGTERM or SIGINT, then puts every output in its safe state.
    pub fn run(mut self) -> Result<(), StartError> {
        let faulted = self.devices.faulted();
        self.notifier.ready(&self.status_line());
        log::info!(
            "sited {} ready: {} devices ({} faulted), control socket {}",
            env!("CARGO_PKG_VERSION"),
            self.devices.names().len(),
            faulted,
            self.control.path().display()
        );
        let mut events = Events::with_capacity(256);
        // Sources whose budget ran out with work left (DESIGN.md §4): mio is edge-triggered,
        // so no new event will announce what they still hold. They are served again on the
        // next turn, after every other ready source and every due timer has had its own, so
        // a flood on one socket cannot starve the doors, the siren or the other sockets.
        let mut again: Vec<Tok> = Vec::new();
        let mut served = std::collections::HashSet::new();
        while !self.stopping {
            self.collect_timer_asks();
            let timeout = if again.is_empty() && self.events.is_empty() {
                self.timers.timeout(monotonic_now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.shutdown();
                return Err(StartError::Io {
                    what: "polling",
                    source: e,
                });
            }
            let revisit = std::mem::take(&mut again);
            served.clear();
            // Edges first: a door or the siren does not wait behind a page of devices or a
            // batch of datagrams that became ready in the same wake-up.
            for edges_first in [true, false] {
                for event in events.iter() {
                    let Some(tok) = Tok::from_token(event.token()) else {
                        if !edges_first {
                            log::debug!("event for unknown token {:?} ignored", event.token());
                        }
                        continue;
                    };
                    if matches!(tok, Tok::Hardware | Tok::Waker) != edges_first {
                        continue;
                    }
                    served.insert(tok);
                    if self.dispatch(tok, event.is_writable()) {
                        again.push(tok);
                    }
                }
            }
            for tok in revisit {
                if served.insert(tok) && self.dispatch(tok, false) {
                    again.push(tok);
                }
            }
            // Events left over from a busy turn.
            self.on_device_events();
            self.on_timers();
            self.end_turn(&mut again);
        }
        self.shutdown();
        Ok(())
    }

    /// Serves one ready source, within its budget. Returns true if it has work left.
    fn dispatch(&mut self, tok: Tok, writable: bool) -> bool {
        match tok {
            Tok::Signals => {
                self.on_signals();
                false
            }
            Tok::Waker => {
                self.on_hardware();
                self.on_store();
                self.on_keys_written();
                false
            }
            Tok::Hardware => {
                self.on_hardware();
                false
            }
            Tok::ControlListener => self.control.accept(self.poll.registry()),
            Tok::ControlConn(i) => self.on_control(i, writable),
            Tok::HubListener | Tok::HubTlsListener => {
                // A storm of devices coming back after a power cut is accepted in chunks,
                // with edges in between.
                use crate::hub::server::{ACCEPT_BUDGET, ACCEPT_CHUNK};
                let tls = tok == Tok::HubTlsListener;
                for _ in 0..ACCEPT_BUDGET / ACCEPT_CHUNK {
                    let Some(hub) = &mut self.hub else {
                        return false;
                    };
                    if !hub.on_listener(self.poll.registry(), ACCEPT_CHUNK, tls) {
                        return false;
                    }
                    self.edges_meanwhile();
                }
                true
            }
            Tok::HubConn(i) => {
                // A chunk of lines at a time, up to the wake-up's budget, with edges between.
                use crate::hub::server::{READ_BUDGET_BYTES, READ_CHUNK_BYTES};
                for _ in 0..READ_BUDGET_BYTES / READ_CHUNK_BYTES {
                    let Some(hub) = &mut self.hub else {
                        return false;
                    };
                    let out = hub.on_conn(i, self.poll.registry(), READ_CHUNK_BYTES);
                    if !self.on_hub_output(out) {
                        return false;
                    }
                    self.edges_meanwhile();
                }
                true
            }
            Tok::HubUdp => {
                // A batch at a time, up to the wake-up's budget, with edges in between.
                for _ in 0..crate::hub::udp::BATCHES_PER_WAKEUP {
                    let Some(hub) = &mut self.hub else {
                        return false;
                    };
                    let out = hub.on_udp();
                    if !self.on_hub_output(out) {
                        return false;
                    }
                    self.edges_meanwhile();
                }
                true
            }
            Tok::LinkConn(i) => {
                self.runner.on_link(i, self.poll.registry());
                false
            }
        }
    }

    /// Between two pieces of a long turn (a batch of datagrams, a chunk of a hub client's
    /// lines, a control request, a few accepts): edges
    /// that came meanwhile are taken now, at most every [`EDGE_CHECK`], so a door or the
    /// siren waits for one piece of work, never for the rest of the turn.
    fn edges_meanwhile(&mut self) {
        if self.edges_checked.elapsed() >= EDGE_CHECK {
            self.on_hardware();
        }
    }

    /// Steps 1-2: edges from the backend go to the devices that own the pins, and the events
    /// the devices make of them go on to the site.
    fn on_hardware(&mut self) {
        self.edges_checked = Instant::now();
        let mut edges = std::mem::take(&mut self.edges);
        if let Err(e) = self.hw.take_edges(&mut edges) {
            log::error!("hardware: reading edges failed: {e}");
        }
        for edge in edges.drain(..) {
            log::debug!("edge: GPIO {} {:?}", edge.pin, edge.level);
            self.devices
                .on_edge(edge, self.hw.as_mut(), &mut self.events);
        }
        self.edges = edges;
        self.on_device_events();
    }

    /// Step 3: device events go to the site runner, and the commands it answers with go to
    /// the devices (step 4). Events those cause come round again, up to [`EVENTS_PER_TURN`].
    fn on_device_events(&mut self) {
        let mut handled = 0;
        while !self.events.is_empty() && handled < EVENTS_PER_TURN {
            for event in std::mem::take(&mut self.events) {
                handled += 1;
                let commands = self.runner.on_device_event(&event);
                self.carry_out(commands);
            }
        }
    }

    /// Step 4: the site's commands go to the device plugins, which drive the pins; then what
    /// the site said about them is logged. What a device reports back waits in `events` for
    /// [`Daemon::on_device_events`].
    fn carry_out(&mut self, commands: Vec<Command>) {
        for command in commands {
            if let Err(e) = self.devices.command(
                &command.device,
                command.value,
                self.hw.as_mut(),
                &mut self.events,
            ) {
                log::error!("site: {} {}: {}", command.device, command.value, e.message);
            }
        }
        self.runner.write_log();
    }

    /// What the hub's clients sent: reports go to the ledger, and those already on disk (a
    /// resend) are answered at once; readings go to the rules, whose commands go to the
    /// devices like the modules' do. Returns whether the hub has more waiting.
    fn on_hub_output(&mut self, out: HubOutput) -> bool {
        let registry = self.poll.registry();
        let acks = self.runner.on_reports(&out.reports, &out.closed, registry);
        if let Some(hub) = &mut self.hub {
            hub.answer(&acks, registry);
        }
        let commands = self.runner.on_readings(&out.readings);
        self.carry_out(commands);
        self.on_device_events();
        out.more
    }

    /// Step 5: the store wrote something. The hub's `OK`s that waited for the disk go out,
    /// and so do the links' reports (and new event-log lines go to `sitectl log -f`, at the
    /// end of this turn).
    fn on_store(&mut self) {
        let acks = self.runner.on_store(self.poll.registry());
        if let Some(hub) = &mut self.hub {
            hub.answer(&acks, self.poll.registry());
        }
    }

    /// Moves the timers the devices, the hub and the runner asked for into the heap.
    fn collect_timer_asks(&mut self) {
        self.timers
            .apply(self.devices.take_timer_asks(), Key::Device);
        if let Some(hub) = &mut self.hub {
            self.timers.apply(hub.take_timer_asks(), Key::Hub);
        }
        self.timers.apply(self.runner.take_timer_asks(), Key::Site);
    }

    /// Fires every due timer, earliest first, each to its owner. Asks are collected before
    /// each one, so a timer cancelled by the one before it does not fire.
    fn on_timers(&mut self) {
        let now = monotonic_now();
        loop {
            self.collect_timer_asks();
            let Some(key) = self.timers.pop_due(now) else {
                break;
            };
            match key {
                Key::Loop(LoopTimer::Watchdog) => {
                    self.notifier.watchdog();
                    if let Some(every) = self.watchdog {
                        self.timers.arm(Key::Loop(LoopTimer::Watchdog), now + every);
                    }
                }
                Key::Loop(LoopTimer::ControlPartial) => {
                    self.control.expire_partial(self.poll.registry());
                }
                // Answered by `settle_sims`, which runs at the end of every turn.
                Key::Loop(LoopTimer::SimSettled) => {}
                Key::Device(timer) => {
                    self.devices
                        .on_timer(timer, now, self.hw.as_mut(), &mut self.events);
                    self.on_device_events();
                }
                Key::Hub(timer) => {
                    if let Some(hub) = &mut self.hub {
                        let out = hub.on_timer(timer, self.poll.registry());
                        self.on_hub_output(out);
                    }
                }
                Key::Site(timer) => {
                    let commands = self.runner.on_timer(timer, self.poll.registry());
                    self.carry_out(commands);
                    self.on_device_events();
                }
            }
        }
    }

    /// The end of a turn: answers that completed go to the control connections that asked,
    /// new event-log lines to `sitectl log -f`, the turn's changes to the writer as one
    /// snapshot, and connections that waited for their answers to go out may go on.
    fn end_turn(&mut self, again: &mut Vec<Tok>) {
        let registry = self.poll.registry();
        if let Some(hub) = &mut self.hub {
            for (asker, response) in hub.take_replies() {
                self.control
                    .respond_later(asker.conn, asker.generation, &response, registry);
            }
        }
        for line in self.runner.take_lines() {
            self.control
                .broadcast(&Response::ok(serde_json::json!({ "line": line })), registry);
        }
        self.settle_sims();
        self.arm_control_partial();
        let device_log = self
            .hub
            .as_mut()
            .map(Hub::take_device_log)
            .unwrap_or_default();
        self.runner.flush(device_log);
        if let Some(hub) = &mut self.hub {
            again.extend(hub.take_resumed().into_iter().map(Tok::HubConn));
        }
        again.extend(
            self.control
                .take_resumed()
                .into_iter()
                .map(Tok::ControlConn),
        );
    }

    /// Keeps the half-sent-request timer at the earliest such request's deadline.
    fn arm_control_partial(&mut self) {
        let due = self.control.next_partial_deadline();
        let armed = self
            .timers
            .deadline_of(&Key::Loop(LoopTimer::ControlPartial));
        match due {
            Some(at) => {
                let at = monotonic_now() + at.saturating_duration_since(Instant::now());
                if armed.is_none_or(|armed| at < armed) {
                    self.timers.arm(Key::Loop(LoopTimer::ControlPartial), at);
                }
            }
            None if armed.is_some() => {
                self.timers.cancel(&Key::Loop(LoopTimer::ControlPartial));
            }
            None => {}
        }
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGTERM | SIGINT => {
                    log::info!(
                        "received {}, stopping",
                        if signal == SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        }
                    );
                    self.stopping = true;
                }
                SIGHUP => {
                    log::info!("received SIGHUP, reloading {}", self.config.file.display());
                    self.runner.reopen_log();
                    let _ = self.reload();
                }
                _ => {}
            }
        }
    }

    /// A control connection is ready: its requests are carried out one at a time, each
    /// answered before the next is taken, up to [`control::REQUESTS_PER_WAKEUP`]. Returns
    /// true if it has more waiting.
    fn on_control(&mut self, conn: usize, writable: bool) -> bool {
        if writable {
            self.control.flush(conn, self.poll.registry());
        }
        self.control.readable(conn, self.poll.registry());
        for _ in 0..control::REQUESTS_PER_WAKEUP {
            let Some(incoming) = self.control.next_request(conn, self.poll.registry()) else {
                return false;
            };
            let answer = self.handle(&incoming);
            if let Some(line) = answer {
                self.control
                    .respond_line(incoming.conn, &line, self.poll.registry());
            }
            self.edges_meanwhile();
        }
        self.control.has_request_waiting(conn)
    }

    fn status_line(&self) -> String {
        let faulted = self.devices.faulted();
        if faulted == 0 {
            format!(
                "{} devices on {}",
                self.devices.names().len(),
                self.hw.name()
            )
        } else {
            format!(
                "{} devices on {}, {faulted} FAULTED",
                self.devices.names().len(),
                self.hw.name()
            )
        }
    }

    /// Re-reads the config. Anything wrong with the new one keeps the old one running, and the
    /// reason is logged and returned.
    fn reload(&mut self) -> Result<(), String> {
        self.notifier.reloading();
        let result = self.try_reload();
        match &result {
            Ok(()) => log::info!("reloaded {}", self.config.file.display()),
            Err(e) => log::error!("reload failed, keeping the running config: {e}"),
        }
        self.notifier.ready(&self.status_line());
        result
    }

    fn try_reload(&mut self) -> Result<(), String> {
        let path: PathBuf = self.config.file.clone();
        let new = config::load(&path).map_err(|e| e.to_string())?;
        devices::check(&new, &mut self.libs).map_err(|e| e.to_string())?;
        let needs_restart = [
            (new.hardware != self.config.hardware, "[hardware]"),
            (
                new.daemon.control_socket != self.config.daemon.control_socket,
                "daemon.control-socket",
            ),
            (
                new.daemon.state_dir != self.config.daemon.state_dir,
                "daemon.state-dir",
            ),
        ];
        if let Some((_, what)) = needs_restart.iter().find(|(changed, _)| *changed) {
            return Err(format!(
                "{what} changed; that needs a restart (systemctl restart sited)"
            ));
        }
        let gid = control::operator_gid(new.daemon.operator_group.as_deref())
            .map_err(|e| e.to_string())?;
        let old_dir = self.config.daemon.plugin_dir.clone();
        if new.hub != self.config.hub {
            return Err("[hub] changed; that needs a restart (systemctl restart sited)".into());
        }
        // Everything that can fail is read and checked before anything is applied: the keys
        // file, and the links' secret files.
        let reloaded_keys = self.load_keys_for_reload()?;
        crate::runner::check_links(&new, self.own_hub.as_ref()).map_err(|e| e.to_string())?;
        self.devices
            .reload(&old_dir, &new, &mut self.libs, self.hw.as_mut())?;
        if (&new.access, &new.emergency, &new.office)
            != (
                &self.config.access,
                &self.config.emergency,
                &self.config.office,
            )
        {
            let devices = &self.devices;
            let commands = self
                .runner
                .reload(
                    &new,
                    self.own_hub.as_ref(),
                    |d| devices.state_of(d),
                    self.poll.registry(),
                )
                .map_err(|e| e.to_string())?;
            self.carry_out(commands);
            self.on_device_events();
        } else {
            self.runner
                .relink(&new, self.own_hub.as_ref(), self.poll.registry())
                .map_err(|e| e.to_string())?;
        }
        self.control.set_operator_gid(gid);
        self.apply_reloaded_keys(reloaded_keys);
        self.config = new;
        Ok(())
    }

    /// Orderly stop: STOPPING=1, every output to its safe state, socket removed.
    fn shutdown(&mut self) {
        self.notifier.stopping();
        self.devices.shutdown(self.hw.as_mut());
        let device_log = self
            .hub
            .as_mut()
            .map(Hub::take_device_log)
            .unwrap_or_default();
        self.runner.finish(device_log);
        self.control.remove_socket();
        log::info!("stopped; every output is in its safe state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_round_trips() {
        let all = [
            Tok::Signals,
            Tok::Waker,
            Tok::Hardware,
            Tok::ControlListener,
            Tok::ControlConn(0),
            Tok::ControlConn(control::MAX_CONNECTIONS - 1),
            Tok::HubListener,
            Tok::HubTlsListener,
            Tok::HubUdp,
            Tok::HubConn(0),
            Tok::HubConn(100_000),
            Tok::LinkConn(0),
            Tok::LinkConn(7),
        ];
        for tok in all {
            assert_eq!(Tok::from_token(tok.into()), Some(tok), "{tok:?}");
        }
    }

    #[test]
    fn unknown_tokens_map_to_none() {
        assert_eq!(Tok::from_token(Token(7)), None);
        assert_eq!(Tok::from_token(Token(LINKS.end())), None);
        assert_eq!(Tok::from_token(Token(CONTROL_CONNS.end())), None);
        assert_eq!(Tok::from_token(Token(usize::MAX)), None);
    }
}
