//! Hardware backends: the only code that touches GPIO lines and PWM channels. Each backend
//! turns kernel edges into [`Edge`]s on the loop thread and carries out pin writes. This module
//! knows nothing of devices or the site (DESIGN.md §5).

use mio::{Registry, Token, Waker};
use site_plugin_api::{Bias, Level, PwmSpec};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod board;
pub mod cdev;
mod gpiochip;
pub mod pwm_chips;
pub mod pwm_sysfs;
pub mod rppal;
pub mod sim;

/// A BCM GPIO number (or a line offset on a cdev chip).
pub type Pin = u32;

/// One input edge, as the loop thread sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub pin: Pin,
    pub level: Level,
    /// On the monotonic clock ([`crate::timers::monotonic_now`]).
    pub at: Duration,
}

/// Which backend the config asks for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// `rppal` on a Raspberry Pi, `cdev` where a GPIO chip exists, otherwise a refusal to
    /// start: simulated pins are never chosen for you.
    #[default]
    Auto,
    Rppal,
    Cdev,
    Sim,
}

/// Errors a Pi owner can act on: each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "this machine is not a Raspberry Pi ({detail}); set `backend = \"sim\"` in [hardware] to run on simulated pins, or `backend = \"cdev\"` for another Linux board"
    )]
    NotAPi { detail: String },
    #[error(
        "backend = \"auto\" found no GPIO hardware: not a Raspberry Pi ({board}), and no GPIO chip (/dev/gpiochip*); set backend = \"sim\" in [hardware] to run on simulated pins, or check the kernel's GPIO driver"
    )]
    NoHardware { board: String },
    #[error(
        "permission denied on {path}: run sited as root or as a user in the `gpio` group (the shipped unit uses SupplementaryGroups=gpio)"
    )]
    PermissionDenied { path: String },
    #[error(
        "permission denied on {denied}, so the GPIO chip \"{wanted}\" could not be looked for: run sited as root or as a user in the `gpio` group (the package's udev rule gives that group the GPIO chips; the shipped unit runs sited with SupplementaryGroups=gpio)"
    )]
    ChipsDenied { wanted: String, denied: String },
    #[error("GPIO {pin} is busy: {holder}; stop that program or pick another pin")]
    PinBusy { pin: Pin, holder: String },
    #[error("GPIO {pin} does not exist on {chip}")]
    NoSuchPin { pin: Pin, chip: String },
    #[error(
        "no GPIO chip \"{label}\" (found: {found}); set [hardware] chip to one of those labels, or to a /dev/gpiochipN path"
    )]
    ChipNotFound { label: String, found: String },
    #[error(
        "no GPIO character devices (/dev/gpiochip*) on this machine; the cdev backend needs a kernel GPIO driver, or set `backend = \"sim\"` in [hardware] to run on simulated pins"
    )]
    NoChips,
    #[error("GPIO {pin} was not claimed {what}")]
    NotClaimed { pin: Pin, what: &'static str },
    #[error("GPIO {pin} is already claimed")]
    AlreadyClaimed { pin: Pin },
    #[error("PWM {chip}/{channel} for GPIO {pin}: {detail}")]
    Pwm {
        pin: Pin,
        chip: u32,
        channel: u32,
        detail: String,
    },
    #[error(
        "GPIO {pin}: a pulse of {pulse_ns} ns does not fit in the PWM period of {period_ns} ns; check the device's pulse settings"
    )]
    PulseTooLong {
        pin: Pin,
        pulse_ns: u64,
        period_ns: u64,
    },
    #[error(
        "no PWM chip \"{wanted}\" (found: {found}); set [hardware] pwm-chip to one of those, by its device-tree node, /sys/devices path or device name"
    )]
    PwmChipNotFound { wanted: String, found: String },
    #[error("GPIO {pin}: no PWM chip for this servo: {why}")]
    NoPwmChip { pin: Pin, why: String },
    #[error(
        "GPIO {pin}: {why}; set both pwm-chip and pwm-channel for this device (the chips are listed in /sys/class/pwm)"
    )]
    PwmNotConfigured { pin: Pin, why: &'static str },
    #[error(
        "the {backend} backend has no simulated inputs; `sitectl sim` works only with backend = \"sim\""
    )]
    NotSimulated { backend: &'static str },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Where a backend delivers edges: it registers its own fds under `token`, or (for edges that
/// arrive on another thread) queues them and wakes the loop through the one `waker`.
pub struct EdgeSink {
    pub registry: Registry,
    pub token: Token,
    pub waker: Arc<Waker>,
}

/// What every backend does. Levels are physical; `active-low` is the device plugin's business.
pub trait Hardware: 'static {
    /// "sim", "rppal", "cdev": shown in `sitectl status` and the log.
    fn name(&self) -> &'static str;
    /// Called once, before any claim, so the backend knows how to wake the loop.
    fn attach(&mut self, sink: EdgeSink) -> Result<(), Error>;
    fn claim_input(&mut self, pin: Pin, bias: Bias) -> Result<(), Error>;
    /// Claims an output and drives it to `initial` at once.
    fn claim_output(&mut self, pin: Pin, initial: Level) -> Result<(), Error>;
    /// Claims a PWM output and starts it at `spec.safe_pulse_ns`.
    fn claim_pwm(&mut self, pin: Pin, spec: PwmSpec) -> Result<(), Error>;
    /// Gives a pin back (outputs are left at whatever level they were last driven to).
    fn release(&mut self, pin: Pin);
    fn read(&mut self, pin: Pin) -> Result<Level, Error>;
    fn write(&mut self, pin: Pin, level: Level) -> Result<(), Error>;
    /// 0 stops pulsing.
    fn set_pwm(&mut self, pin: Pin, pulse_ns: u64) -> Result<(), Error>;
    /// Moves every edge that has arrived into `out`. Called when the backend's token fires.
    fn take_edges(&mut self, out: &mut Vec<Edge>) -> Result<(), Error>;
    /// Where a just-claimed input rests when nothing acts on it (button released, door shut).
    /// Real pins read what the wiring says, so only the sim backend uses this.
    fn set_rest_level(&mut self, pin: Pin, level: Level) {
        let _ = (pin, level);
    }
    /// Sim backend only: the input `pin` now reads `level` (an edge follows if it changed).
    fn simulate(&mut self, pin: Pin, level: Level) -> Result<(), Error> {
        let _ = (pin, level);
        Err(Error::NotSimulated {
            backend: self.name(),
        })
    }
}

/// The PWM chip and channel a backend uses for a servo whose config names no chip number or
/// no channel: the chip `[hardware] pwm-chip` names, or the Raspberry Pi's own PWM device, as
/// numbered now; and, for the Pi's own device only, the Pi's pin-to-channel routing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PwmDefaults {
    /// The chip's number and what it is (for messages).
    pub chip: Option<(u32, String)>,
    /// The Pi's routing, set only when `chip` is the Pi's own PWM device.
    pub pi: Option<pwm_chips::PiPwm>,
    /// `[hardware] pwm-chip`, and the board's routing: to look again when the chip was not
    /// there yet (its driver loads during boot, maybe after sited starts).
    wanted: Option<String>,
    board_pi: Option<pwm_chips::PiPwm>,
    /// Why there is no chip, for the error of a servo that needs one.
    missing: Option<String>,
}

impl PwmDefaults {
    /// Looks for the chip at start. A chip that is not there is not an error yet: the servos
    /// that need it look again when they claim it, and fail with the reason if it is still
    /// missing, while the rest of the site runs.
    pub fn find(wanted: Option<&str>, board: &board::Board) -> PwmDefaults {
        let mut defaults = PwmDefaults {
            wanted: wanted.map(str::to_string),
            board_pi: pwm_chips::PiPwm::of(board),
            ..PwmDefaults::default()
        };
        defaults.resolve();
        match (&defaults.chip, &defaults.missing) {
            (Some((_, what)), _) => log::info!("hardware: servos use PWM chip {what}"),
            (None, Some(why)) => log::warn!("hardware: {why}"),
            (None, None) => {}
        }
        defaults
    }

    fn resolve(&mut self) {
        let chips = pwm_chips::list(
            Path::new(pwm_sysfs::SYSFS_PWM_ROOT),
            Path::new("/sys/firmware/devicetree/base"),
        );
        self.missing = None;
        match pwm_chips::select(&chips, self.wanted.as_deref(), self.board_pi) {
            Ok(Some(found)) => {
                self.chip = Some((found.number, found.what));
                self.pi = if found.pis_own { self.board_pi } else { None };
            }
            Ok(None) => {
                self.missing = match self.board_pi {
                    Some(pi) => Some(format!(
                        "the Raspberry Pi's PWM device is not there (PWM chips found: {}): {}",
                        pwm_chips::describe_all(&chips),
                        pi.enable_hint()
                    )),
                    None if !chips.is_empty() => Some(format!(
                        "no PWM chip chosen for the servos: set [hardware] pwm-chip to one of {}",
                        pwm_chips::describe_all(&chips)
                    )),
                    None => Some("no PWM chip on this machine".into()),
                };
            }
            Err(e) => self.missing = Some(e.to_string()),
        }
    }

    /// Looks again if the chip was missing (a claim at start or after a reload).
    pub fn refresh(&mut self) {
        if self.chip.is_none() {
            self.resolve();
            if let Some((_, what)) = &self.chip {
                log::info!("hardware: servos use PWM chip {what} (it appeared after the start)");
            }
        }
    }

    /// Why no chip is known, if none is.
    pub fn missing(&self) -> Option<&str> {
        self.missing.as_deref()
    }

    pub fn chip(&self) -> Option<u32> {
        self.chip.as_ref().map(|(n, _)| *n)
    }

    pub fn channel_for(&self, pin: Pin) -> Option<u32> {
        self.pi?.channel_for(pin)
    }

    /// Both, when the board routes `pin` to a channel of its own PWM device.
    pub fn default_for(&self, pin: Pin) -> Option<(u32, u32)> {
        Some((self.chip()?, self.channel_for(pin)?))
    }
}

/// Opens the backend the config names. `auto` picks `rppal` on a Raspberry Pi (by `board`),
/// `cdev` where a GPIO chip exists, and otherwise refuses: it never picks simulated pins, so
/// nobody mistakes a simulation for wired doors.
/// `sim_pins`, `sim_wire`: for the sim backend, a file to mirror every pin's level into and a
/// socket that plays the wires (`[hardware] sim-wire`). `pwm_chip` is `[hardware] pwm-chip`.
pub fn open(
    kind: &BackendKind,
    chip: Option<&str>,
    pwm_chip: Option<&str>,
    sim_pins: Option<&Path>,
    sim_wire: Option<&Path>,
    board: &board::Board,
) -> Result<Box<dyn Hardware>, Error> {
    let pwm = || PwmDefaults::find(pwm_chip, board);

    match kind {
        BackendKind::Sim => {
            let mut sim = sim::SimBackend::with_pins_file(sim_pins.map(Path::to_path_buf));
            if let Some(path) = sim_wire {
                sim.wire(path)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
            Ok(Box::new(sim))
        }
        BackendKind::Rppal => Ok(Box::new(rppal::RppalBackend::open(board, pwm())?)),
        BackendKind::Cdev => Ok(Box::new(cdev::CdevBackend::open(chip, pwm())?)),
        BackendKind::Auto => {
            if let Some(model) = &board.model {
                log::info!("hardware: {model}, so backend = \"auto\" uses rppal");
                return Ok(Box::new(rppal::RppalBackend::open(board, pwm())?));
            }
            let chips = gpiocdev::chip::chips().unwrap_or_default();
            if chips.is_empty() {
                return Err(Error::NoHardware {
                    board: board.evidence(),
                });
            }
            log::info!(
                "hardware: not a Raspberry Pi, and {} GPIO chip(s) found, so backend = \"auto\" uses cdev",
                chips.len()
            );
            Ok(Box::new(cdev::CdevBackend::open(chip, pwm())?))
        }
    }
}
