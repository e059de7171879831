//! The plugin's view of its host: a safe Rust trait over the C callback table. Plugins are
//! written against [`Host`]; the export macro hands them a [`VtableHost`] at run time and unit
//! tests hand them a [`crate::FakeHost`].

use crate::abi::{self, HostVtable, StrRef};
use std::fmt;

/// A pin's electrical level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Low,
    High,
}

impl Level {
    pub fn from_bool(high: bool) -> Self {
        if high { Level::High } else { Level::Low }
    }

    pub fn is_high(self) -> bool {
        self == Level::High
    }

    pub fn to_raw(self) -> u32 {
        match self {
            Level::Low => abi::LEVEL_LOW,
            Level::High => abi::LEVEL_HIGH,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            abi::LEVEL_LOW => Some(Level::Low),
            abi::LEVEL_HIGH => Some(Level::High),
            _ => None,
        }
    }

    /// The physical level for a logical "active" state, honouring `active-low`.
    pub fn active(active: bool, active_low: bool) -> Self {
        Level::from_bool(active != active_low)
    }
}

impl std::ops::Not for Level {
    type Output = Level;
    fn not(self) -> Level {
        match self {
            Level::Low => Level::High,
            Level::High => Level::Low,
        }
    }
}

/// An input's internal bias resistor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// No internal resistor: the circuit has its own.
    Off,
    PullUp,
    PullDown,
}

impl Bias {
    pub fn to_raw(self) -> u32 {
        match self {
            Bias::Off => abi::BIAS_OFF,
            Bias::PullUp => abi::BIAS_PULL_UP,
            Bias::PullDown => abi::BIAS_PULL_DOWN,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            abi::BIAS_OFF => Some(Bias::Off),
            abi::BIAS_PULL_UP => Some(Bias::PullUp),
            abi::BIAS_PULL_DOWN => Some(Bias::PullDown),
            _ => None,
        }
    }
}

/// Log severity for [`Host::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub fn to_raw(self) -> u32 {
        match self {
            LogLevel::Error => abi::LOG_ERROR,
            LogLevel::Warn => abi::LOG_WARN,
            LogLevel::Info => abi::LOG_INFO,
            LogLevel::Debug => abi::LOG_DEBUG,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            abi::LOG_ERROR => Some(LogLevel::Error),
            abi::LOG_WARN => Some(LogLevel::Warn),
            abi::LOG_INFO => Some(LogLevel::Info),
            abi::LOG_DEBUG => Some(LogLevel::Debug),
            _ => None,
        }
    }
}

/// A hardware PWM output: which `/sys/class/pwm` chip and channel, and its period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PwmSpec {
    /// `None` means no hardware PWM is configured: the backend falls back to software PWM.
    pub chip: Option<u32>,
    pub channel: Option<u32>,
    pub period_ns: u64,
    /// The pulse the host restores when the device faults or the daemon stops.
    pub safe_pulse_ns: u64,
}

/// Why a host callback refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The pin is not this device's, or not claimed for this use.
    Denied,
    /// The hardware failed; the host has logged why.
    Hardware,
    BadArgument,
}

impl HostError {
    pub fn from_raw(raw: i32) -> Result<(), HostError> {
        match raw {
            abi::HOST_OK => Ok(()),
            abi::HOST_DENIED => Err(HostError::Denied),
            abi::HOST_HW_ERROR => Err(HostError::Hardware),
            _ => Err(HostError::BadArgument),
        }
    }

    pub fn to_raw(result: Result<(), HostError>) -> i32 {
        match result {
            Ok(()) => abi::HOST_OK,
            Err(HostError::Denied) => abi::HOST_DENIED,
            Err(HostError::Hardware) => abi::HOST_HW_ERROR,
            Err(HostError::BadArgument) => abi::HOST_BAD_ARGUMENT,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Denied => "the host refused: the pin is not this device's",
            HostError::Hardware => "the hardware failed (see the daemon log)",
            HostError::BadArgument => "the host rejected an argument",
        })
    }
}

impl std::error::Error for HostError {}

/// What a device may ask of the daemon. Every pin access goes through here.
pub trait Host {
    fn log(&mut self, level: LogLevel, msg: &str);
    /// Monotonic microseconds since the daemon started.
    fn now_us(&mut self) -> u64;
    /// `rest`: the level the input shows when nothing acts on it (button released, door shut,
    /// switch off). Real pins read what they read; simulated pins start at `rest`.
    fn claim_input(&mut self, pin: u32, bias: Bias, rest: Level) -> Result<(), HostError>;
    fn claim_output(&mut self, pin: u32, safe_level: Level) -> Result<(), HostError>;
    fn claim_pwm(&mut self, pin: u32, spec: PwmSpec) -> Result<(), HostError>;
    fn read(&mut self, pin: u32) -> Result<Level, HostError>;
    fn write(&mut self, pin: u32, level: Level) -> Result<(), HostError>;
    /// 0 stops pulsing.
    fn set_pwm(&mut self, pin: u32, pulse_ns: u64) -> Result<(), HostError>;
    fn arm_timer(&mut self, id: u64, after_us: u64) -> Result<(), HostError>;
    fn cancel_timer(&mut self, id: u64);
    fn emit(&mut self, event: &str);
    fn set_state(&mut self, state: &serde_json::Value);
}

/// [`Host`] over the C callback table the daemon passed to `create`.
pub struct VtableHost {
    vtable: *const HostVtable,
}

impl VtableHost {
    /// # Safety
    /// `vtable` must be valid (and its `size`/`abi_version` checked) for the life of this value.
    pub unsafe fn new(vtable: *const HostVtable) -> Self {
        VtableHost { vtable }
    }

    fn vt(&self) -> &HostVtable {
        // SAFETY: `new`'s contract: the table outlives this value.
        unsafe { &*self.vtable }
    }

    /// Passes the message for an error status about to be returned.
    pub fn set_error(&mut self, msg: &str) {
        let vt = self.vt();
        // SAFETY: callbacks from a valid table, with its own ctx; msg is borrowed for the call.
        // A refusal (a message the host cannot read) leaves the host its default message.
        let _ = unsafe { (vt.set_error)(vt.ctx, StrRef::new(msg)) };
    }
}

impl Host for VtableHost {
    fn log(&mut self, level: LogLevel, msg: &str) {
        let vt = self.vt();
        // SAFETY: valid table (see `new`); msg borrowed for the call. A log line the host
        // refuses is not the device's failure.
        let _ = unsafe { (vt.log)(vt.ctx, level.to_raw(), StrRef::new(msg)) };
    }

    fn now_us(&mut self) -> u64 {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        unsafe { (vt.now_us)(vt.ctx) }
    }

    fn claim_input(&mut self, pin: u32, bias: Bias, rest: Level) -> Result<(), HostError> {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe { (vt.claim_input)(vt.ctx, pin, bias.to_raw(), rest.to_raw()) })
    }

    fn claim_output(&mut self, pin: u32, safe_level: Level) -> Result<(), HostError> {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe { (vt.claim_output)(vt.ctx, pin, safe_level.to_raw()) })
    }

    fn claim_pwm(&mut self, pin: u32, spec: PwmSpec) -> Result<(), HostError> {
        let vt = self.vt();
        let chip = spec.chip.unwrap_or(abi::PWM_NONE);
        let channel = spec.channel.unwrap_or(abi::PWM_NONE);
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe {
            (vt.claim_pwm)(
                vt.ctx,
                pin,
                chip,
                channel,
                spec.period_ns,
                spec.safe_pulse_ns,
            )
        })
    }

    fn read(&mut self, pin: u32) -> Result<Level, HostError> {
        let vt = self.vt();
        let mut raw = u32::MAX;
        // SAFETY: valid table (see `new`); `raw` outlives the call.
        HostError::from_raw(unsafe { (vt.read_pin)(vt.ctx, pin, &mut raw) })?;
        Level::from_raw(raw).ok_or(HostError::BadArgument)
    }

    fn write(&mut self, pin: u32, level: Level) -> Result<(), HostError> {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe { (vt.write_pin)(vt.ctx, pin, level.to_raw()) })
    }

    fn set_pwm(&mut self, pin: u32, pulse_ns: u64) -> Result<(), HostError> {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe { (vt.set_pwm)(vt.ctx, pin, pulse_ns) })
    }

    fn arm_timer(&mut self, id: u64, after_us: u64) -> Result<(), HostError> {
        let vt = self.vt();
        // SAFETY: valid table (see `new`).
        HostError::from_raw(unsafe { (vt.arm_timer)(vt.ctx, id, after_us) })
    }

    fn cancel_timer(&mut self, id: u64) {
        let vt = self.vt();
        // SAFETY: valid table (see `new`). Cancelling an unarmed timer is not an error.
        let _ = unsafe { (vt.cancel_timer)(vt.ctx, id) };
    }

    fn emit(&mut self, event: &str) {
        let vt = self.vt();
        // SAFETY: valid table (see `new`); event borrowed for the call. The host refuses only
        // a malformed string, which a &str is not.
        let _ = unsafe { (vt.emit)(vt.ctx, StrRef::new(event)) };
    }

    fn set_state(&mut self, state: &serde_json::Value) {
        let text = state.to_string();
        let vt = self.vt();
        // SAFETY: valid table (see `new`); text borrowed for the call. The host refuses only a
        // state that is not a JSON object, and logs it.
        let _ = unsafe { (vt.set_state)(vt.ctx, StrRef::new(&text)) };
    }
}
