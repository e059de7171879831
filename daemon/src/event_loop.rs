//! The one event loop (DESIGN.md §3, §4). Everything happens on this thread: an edge arrives
//! from the hardware backend, the plugin host hands it to the device that owns the pin, the
//! device's events go to the site logic, and the resulting commands go back out through the
//! plugins to the backend. The loop sleeps in `poll` until an fd, a signal or the next timer
//! deadline needs it; an idle daemon wakes only for the watchdog.

use crate::config::{self, Config};
use crate::conn_io::TokenRange;
use crate::control::{self, ControlServer, Incoming};
use crate::devices::{self, DeviceEvent, Devices};
use crate::hub::server::Asker;
use crate::hw::{self, Edge, EdgeSink, Hardware};
use crate::node::{Node, NodeTokens};
use crate::notify::Notifier;
use crate::plugin_host::Libraries;
use crate::timers::Timers;
use crate::timers::monotonic_now;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use site_proto::{DaemonInfo, ErrorKind, Request, Response, Status, VersionInfo};
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
            _ => LINKS
                .slot(token)
                .map(Tok::LinkConn)
                .or_else(|| HUB_CONNS.slot(token).map(Tok::HubConn))
                .or_else(|| CONTROL_CONNS.slot(token).map(Tok::ControlConn)),
        }
    }
}

/// Timers that belong to the loop itself (device timers live in `Devices`).
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
    Node(#[from] crate::node::Error),
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
    /// The site modules, hub, links and ledger this node runs.
    node: Node,
    control: ControlServer,
    timers: Timers<LoopTimer>,
    notifier: Notifier,
    watchdog: Option<Duration>,
    started: Instant,
    stopping: bool,
    edges: Vec<Edge>,
    events: Vec<DeviceEvent>,
    pending_sims: Vec<PendingSim>,
}

impl Daemon {
    /// Loads the config, opens the hardware, creates every device (outputs at their safe level
    /// first) and binds the control socket. Nothing is half-started on error.
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
        let wake_store = waker.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = wake_store.wake();
        });
        let tokens = NodeTokens {
            hub_listener: Tok::HubListener.into(),
            hub_udp: Tok::HubUdp.into(),
            hub_conns: HUB_CONNS,
            links: LINKS,
        };
        let node = match Node::start(
            &config,
            &mut devices,
            hw.as_mut(),
            poll.registry(),
            tokens,
            wake,
        ) {
            Ok(node) => node,
            Err(e) => {
                devices.shutdown(hw.as_mut());
                return Err(e.into());
            }
        };
        let mut node = node;
        let control = match ControlServer::bind(
            &config.daemon.control_socket,
            operator_gid,
            poll.registry(),
            Tok::ControlListener.into(),
            CONTROL_CONNS,
        ) {
            Ok(c) => c,
            Err(e) => {
                let mut devices = devices;
                devices.shutdown(hw.as_mut());
                node.finish();
                return Err(e.into());
            }
        };

        let notifier = Notifier::from_env();
        let watchdog = crate::notify::watchdog_interval();
        let mut timers = Timers::new();
        if let Some(every) = watchdog {
            timers.arm(LoopTimer::Watchdog, monotonic_now() + every);
        }
        Ok(Daemon {
            poll,
            _waker: waker,
            signals,
            config,
            board,
            hw,
            libs,
            devices,
            node,
            control,
            timers,
            notifier,
            watchdog,
            started: Instant::now(),
            stopping: false,
            edges: Vec::new(),
            events: Vec::new(),
            pending_sims: Vec::new(),
        })
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
            let now = monotonic_now();
            let timeout = if again.is_empty() {
                [
                    self.timers.timeout(now),
                    self.devices.next_deadline().map(|d| d.saturating_sub(now)),
                    self.node.next_deadline().map(|d| d.saturating_sub(now)),
                ]
                .into_iter()
                .flatten()
                .min()
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
            for event in events.iter() {
                match Tok::from_token(event.token()) {
                    Some(tok) => {
                        served.insert(tok);
                        if self.dispatch(tok, event.is_writable()) {
                            again.push(tok);
                        }
                    }
                    None => log::debug!("event for unknown token {:?} ignored", event.token()),
                }
            }
            for tok in revisit {
                if served.insert(tok) && self.dispatch(tok, false) {
                    again.push(tok);
                }
            }
            self.on_timers();
            for (asker, response) in self.node.take_replies() {
                self.control.respond_later(
                    asker.conn,
                    asker.generation,
                    &response,
                    self.poll.registry(),
                );
            }
            for line in self.node.take_lines() {
                self.control.broadcast(
                    &Response::ok(serde_json::json!({ "line": line })),
                    self.poll.registry(),
                );
            }
            self.settle_sims();
            self.arm_control_partial();
            self.node.flush();
            // Connections that waited for their answers to go out may go on.
            again.extend(self.node.take_resumed().into_iter().map(Tok::HubConn));
            again.extend(
                self.control
                    .take_resumed()
                    .into_iter()
                    .map(Tok::ControlConn),
            );
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
                false
            }
            Tok::Hardware => {
                self.on_hardware();
                false
            }
            Tok::ControlListener => self.control.accept(self.poll.registry()),
            Tok::ControlConn(i) => self.on_control(i, writable),
            Tok::HubListener => self.node.on_hub_listener(self.poll.registry()),
            Tok::HubConn(i) => {
                self.node
                    .on_hub_conn(i, &mut self.devices, self.hw.as_mut(), self.poll.registry())
            }
            Tok::HubUdp => {
                self.node
                    .on_udp(&mut self.devices, self.hw.as_mut(), self.poll.registry())
            }
            Tok::LinkConn(i) => {
                self.node.on_link(i, self.poll.registry());
                false
            }
        }
    }

    /// Keeps the half-sent-request timer at the earliest such request's deadline.
    fn arm_control_partial(&mut self) {
        let due = self.control.next_partial_deadline();
        let armed = self.timers.deadline_of(&LoopTimer::ControlPartial);
        match due {
            Some(at) => {
                let at = monotonic_now() + at.saturating_duration_since(Instant::now());
                if armed.is_none_or(|armed| at < armed) {
                    self.timers.arm(LoopTimer::ControlPartial, at);
                }
            }
            None if armed.is_some() => {
                self.timers.cancel(&LoopTimer::ControlPartial);
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
                    self.node.reopen_log();
                    let _ = self.reload();
                }
                _ => {}
            }
        }
    }

    /// Step 1-2 of the flow: edges from the backend go to the devices that own the pins.
    fn on_hardware(&mut self) {
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

    /// Step 3: device events go to the site logic, whose commands go back to the devices.
    fn on_device_events(&mut self) {
        self.node.on_device_events(
            &mut self.events,
            &mut self.devices,
            self.hw.as_mut(),
            self.poll.registry(),
        );
    }

    /// Step 5: the store wrote something; acknowledgements and reports that waited go out
    /// (and new event-log lines to `sitectl log -f`, after this turn).
    fn on_store(&mut self) {
        self.node.on_store(self.poll.registry());
    }

    fn on_timers(&mut self) {
        let now = monotonic_now();
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                LoopTimer::Watchdog => {
                    self.notifier.watchdog();
                    if let Some(every) = self.watchdog {
                        self.timers.arm(LoopTimer::Watchdog, now + every);
                    }
                }
                LoopTimer::ControlPartial => {
                    self.control.expire_partial(self.poll.registry());
                }
                // Answered by `settle_sims`, which runs at the end of every turn.
                LoopTimer::SimSettled => {}
            }
        }
        self.devices
            .fire_due(now, self.hw.as_mut(), &mut self.events);
        self.on_device_events();
        self.node
            .fire_due(&mut self.devices, self.hw.as_mut(), self.poll.registry());
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
            if let Some(response) = self.handle(&incoming) {
                self.control
                    .respond(incoming.conn, &response, self.poll.registry());
            }
        }
        self.control.has_request_waiting(conn)
    }

    /// Carries out one control request (permission was checked by the control server).
    /// `None`: the answer comes later (`sitectl send`), through the node's replies.
    fn handle(&mut self, incoming: &Incoming) -> Option<Response> {
        Some(match &incoming.request {
            Request::Status {} => Response::ok(self.status()),
            Request::Version {} => Response::ok(VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                plugin_abi: site_plugin_api::abi::SUPPORTED_ABI_VERSIONS.to_vec(),
                protocol: site_proto::PROTOCOL_VERSION,
            }),
            Request::Set { device, value } => {
                log::info!("control: uid {} sets {device} {value}", incoming.peer.uid);
                let result =
                    self.devices
                        .command(device, value, self.hw.as_mut(), &mut self.events);
                self.on_device_events();
                match result {
                    Ok(()) => Response::ok(self.device_result(device)),
                    Err(e) => Response::err(e.kind, e.message),
                }
            }
            Request::Sim { device, value } => {
                log::info!(
                    "control: uid {} simulates {device} {value}",
                    incoming.peer.uid
                );
                let before = self.device_state(device);
                match self.devices.simulate(device, value, self.hw.as_mut()) {
                    Ok(()) => {
                        // Deliver the edge now, so the reply (and the next status) shows its effect.
                        self.on_hardware();
                        let now = self.device_state(device);
                        if now.eq_ignore_ascii_case(value) || now != before {
                            Response::ok(self.device_result(device))
                        } else {
                            // Inside the debounce lockout: answer when it has been applied.
                            let deadline = monotonic_now() + SIM_SETTLE;
                            self.pending_sims.push(PendingSim {
                                asker: Asker {
                                    conn: incoming.conn,
                                    generation: incoming.generation,
                                },
                                device: device.clone(),
                                value: value.clone(),
                                before,
                                deadline,
                            });
                            if self.timers.deadline_of(&LoopTimer::SimSettled).is_none() {
                                self.timers.arm(LoopTimer::SimSettled, deadline);
                            }
                            return None;
                        }
                    }
                    Err(e) => Response::err(e.kind, e.message),
                }
            }
            Request::Reload {} => {
                log::info!("control: uid {} asked for a reload", incoming.peer.uid);
                // As SIGHUP does: `systemctl reload` runs `sitectl reload`, and logrotate
                // may have moved the logs.
                self.node.reopen_log();
                match self.reload() {
                    Ok(()) => Response::ok(serde_json::json!({ "reloaded": self.config.file })),
                    Err(message) => Response::err(ErrorKind::Failed, message),
                }
            }
            Request::Log { lines, follow } => match self.node.log_tail(*lines) {
                Ok(tail) => {
                    if *follow {
                        self.control.follow(incoming.conn);
                    }
                    Response::ok(serde_json::json!({ "lines": tail }))
                }
                Err(message) => Response::err(ErrorKind::Rejected, message),
            },
            Request::Send {
                device,
                command,
                timeout_ms,
            } => {
                log::info!(
                    "control: uid {} sends {device} {command:?}",
                    incoming.peer.uid
                );
                if command.is_empty() || command.len() > 256 || command.contains(['\n', '\r']) {
                    return Some(Response::err(
                        ErrorKind::BadRequest,
                        "a command is one line of at most 256 bytes",
                    ));
                }
                let asker = Asker {
                    conn: incoming.conn,
                    generation: incoming.generation,
                };
                let timeout = Duration::from_millis((*timeout_ms).clamp(1, 600_000));
                match self
                    .node
                    .send(device, command, timeout, asker, self.poll.registry())
                {
                    // The answer comes when the device replies or the timeout passes.
                    Ok(()) => return None,
                    Err(message) => Response::err(ErrorKind::Rejected, message),
                }
            }
            Request::Devices { after, limit } => {
                match self.node.devices(after.as_deref(), *limit) {
                    Ok(page) => Response::ok(page),
                    Err(message) => Response::err(ErrorKind::Rejected, message),
                }
            }
            Request::Sensors { after, limit } => {
                match self.node.sensors_page(after.as_deref(), *limit) {
                    Ok(page) => Response::ok(page),
                    Err(message) => Response::err(ErrorKind::Rejected, message),
                }
            }
            Request::CountReset {} => match self.node.reset_count(incoming.peer.uid) {
                Ok(was) => Response::ok(serde_json::json!({ "staff": 0, "was": was })),
                Err(message) => Response::err(ErrorKind::Rejected, message),
            },
        })
    }

    /// A device's state word now ("" if it has none).
    fn device_state(&self, device: &str) -> String {
        self.devices
            .status()
            .remove(device)
            .map(|s| s.state)
            .unwrap_or_default()
    }

    /// Answers the `sim` requests whose input has taken its new state, or whose time is up.
    fn settle_sims(&mut self) {
        if self.pending_sims.is_empty() {
            return;
        }
        let now = monotonic_now();
        let pending = std::mem::take(&mut self.pending_sims);
        for sim in pending {
            let state = self.device_state(&sim.device);
            let response = if state.eq_ignore_ascii_case(&sim.value) || state != sim.before {
                Response::ok(self.device_result(&sim.device))
            } else if now >= sim.deadline {
                Response::err(
                    ErrorKind::Failed,
                    format!(
                        "{} is still {state} {:.1} s after simulating {}",
                        sim.device,
                        SIM_SETTLE.as_secs_f64(),
                        sim.value
                    ),
                )
            } else {
                self.pending_sims.push(sim);
                continue;
            };
            self.control.respond_later(
                sim.asker.conn,
                sim.asker.generation,
                &response,
                self.poll.registry(),
            );
        }
        if let Some(next) = self.pending_sims.iter().map(|s| s.deadline).min() {
            self.timers.arm(LoopTimer::SimSettled, next);
        }
    }

    fn device_result(&self, device: &str) -> serde_json::Value {
        match self.devices.status().remove(device) {
            Some(status) => {
                serde_json::json!({ "device": device, "state": status.state, "detail": status.detail })
            }
            None => serde_json::Value::Null,
        }
    }

    fn status(&self) -> Status {
        let (staff, site, hub) = self.node.status();
        let sensors = self.node.sensors();
        Status {
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                backend: self.hw.name().to_string(),
                board: Some(site_proto::BoardInfo {
                    model: self.board.model.clone(),
                    read: self
                        .board
                        .read
                        .iter()
                        .map(|(file, said)| site_proto::BoardSource {
                            file: file.clone(),
                            said: said.clone(),
                        })
                        .collect(),
                }),
                config: self.config.file.display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
            },
            devices: self.devices.status(),
            staff,
            site: Some(site).filter(|s| !s.is_empty()),
            hub,
            sensors,
            sensor_count: self.node.sensor_count(),
            store: self.node.store(),
        }
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
        self.devices
            .reload(&old_dir, &new, &mut self.libs, self.hw.as_mut())?;
        if (&new.access, &new.emergency, &new.office)
            != (
                &self.config.access,
                &self.config.emergency,
                &self.config.office,
            )
        {
            self.node
                .reload(
                    &new,
                    &mut self.devices,
                    self.hw.as_mut(),
                    self.poll.registry(),
                )
                .map_err(|e| e.to_string())?;
        }
        self.control.set_operator_gid(gid);
        self.config = new;
        Ok(())
    }

    /// Orderly stop: STOPPING=1, every output to its safe state, socket removed.
    fn shutdown(&mut self) {
        self.notifier.stopping();
        self.devices.shutdown(self.hw.as_mut());
        self.node.finish();
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
        assert_eq!(Tok::from_token(Token(6)), None);
        assert_eq!(Tok::from_token(Token(LINKS.end())), None);
        assert_eq!(Tok::from_token(Token(CONTROL_CONNS.end())), None);
        assert_eq!(Tok::from_token(Token(usize::MAX)), None);
    }
}
