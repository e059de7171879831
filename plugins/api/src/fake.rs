//! A host for unit tests: records everything a device does, enforces pin ownership the way
//! the daemon does, and keeps a fake monotonic clock with timers the test advances by hand.

use crate::device::{Device, parse_config};
use crate::host::{Bias, Host, HostError, Level, LogLevel, PwmSpec};
use std::collections::{BTreeMap, HashMap};

/// How a pin was claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Input(Bias),
    Output { safe: Level },
    Pwm(PwmSpec),
}

/// A device config as JSON with `pin` and then `keys` (`r#""safe": "on""#`, or empty), so a
/// test writes only the keys it is about.
pub fn config_json(pin: u32, keys: &str) -> String {
    let sep = if keys.is_empty() { "" } else { ", " };
    format!(r#"{{"pin": {pin}{sep}{keys}}}"#)
}

/// The test double for the daemon's plugin host.
#[derive(Debug, Default)]
pub struct FakeHost {
    /// Pins this device may use (its config's `pin`); empty means "any" for convenience.
    pub allowed: Vec<u32>,
    pub claims: BTreeMap<u32, Claim>,
    /// Input levels as the "hardware" shows them; set these before calling `read`.
    pub inputs: HashMap<u32, Level>,
    /// Output levels as last written.
    pub outputs: HashMap<u32, Level>,
    /// Every write in order: (pin, level, now_us).
    pub writes: Vec<(u32, Level, u64)>,
    /// Current PWM pulse per pin (0 = not pulsing).
    pub pwm: HashMap<u32, u64>,
    /// Every PWM change in order: (pin, pulse_ns, now_us).
    pub pwm_writes: Vec<(u32, u64, u64)>,
    /// Armed timers: id -> deadline (us).
    pub timers: HashMap<u64, u64>,
    pub events: Vec<String>,
    pub state: serde_json::Value,
    pub logs: Vec<(LogLevel, String)>,
    pub now_us: u64,
    /// Makes the next hardware call fail, to test error paths.
    pub fail_hardware: bool,
}

impl FakeHost {
    /// A host that lets the device use exactly `pins`.
    pub fn with_pins(pins: &[u32]) -> Self {
        FakeHost {
            allowed: pins.to_vec(),
            ..FakeHost::default()
        }
    }

    /// A host that lets the device use `pin` alone, and a `D` created on it from
    /// `{"pin": <pin>, <keys>}` (see [`FakeHost::create`]): where most plugin tests start.
    pub fn with_device<D: Device>(pin: u32, keys: &str) -> Result<(FakeHost, D), String> {
        let mut host = FakeHost::with_pins(&[pin]);
        let device = host.create(&config_json(pin, keys))?;
        Ok((host, device))
    }

    /// Creates a `D` on this host from its config as JSON (everything but `name` and `kind`),
    /// parsed and checked the way the daemon does it, so a test starts from what a site owner
    /// would write.
    pub fn create<D: Device>(&mut self, config_json: &str) -> Result<D, String> {
        let config = parse_config::<D::Config>(config_json)?;
        D::check(&config)?;
        D::create(self, config)
    }

    fn check_pin(&self, pin: u32) -> Result<(), HostError> {
        if self.allowed.is_empty() || self.allowed.contains(&pin) {
            Ok(())
        } else {
            Err(HostError::Denied)
        }
    }

    fn hardware(&mut self) -> Result<(), HostError> {
        if std::mem::take(&mut self.fail_hardware) {
            Err(HostError::Hardware)
        } else {
            Ok(())
        }
    }

    /// Takes the events emitted so far.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }

    /// The `"state"` field of the last published state, if any.
    pub fn state_word(&self) -> Option<&str> {
        self.state.get("state").and_then(|s| s.as_str())
    }

    /// Sets an input's level and delivers the edge to `device` at the current time.
    pub fn edge<D: Device>(
        &mut self,
        device: &mut D,
        pin: u32,
        level: Level,
    ) -> Result<(), String> {
        self.inputs.insert(pin, level);
        let now = self.now_us;
        device.on_edge(self, pin, level, now)
    }

    /// Advances the clock to `until_us`, firing due timers in deadline order at their deadlines.
    pub fn advance_to<D: Device>(&mut self, device: &mut D, until_us: u64) -> Result<(), String> {
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= until_us)
                .min_by_key(|(id, at)| (**at, **id));
            let Some((&id, &at)) = next else { break };
            self.timers.remove(&id);
            self.now_us = self.now_us.max(at);
            device.on_timer(self, id)?;
        }
        self.now_us = self.now_us.max(until_us);
        Ok(())
    }

    /// Advances the clock by `us` (see [`FakeHost::advance_to`]).
    pub fn advance<D: Device>(&mut self, device: &mut D, us: u64) -> Result<(), String> {
        let until = self.now_us + us;
        self.advance_to(device, until)
    }
}

impl Host for FakeHost {
    fn log(&mut self, level: LogLevel, msg: &str) {
        self.logs.push((level, msg.to_string()));
    }

    fn now_us(&mut self) -> u64 {
        self.now_us
    }

    fn claim_input(&mut self, pin: u32, bias: Bias, rest: Level) -> Result<(), HostError> {
        self.check_pin(pin)?;
        self.hardware()?;
        self.claims.insert(pin, Claim::Input(bias));
        // A test may set the level first (a button held down at start); otherwise it rests.
        self.inputs.entry(pin).or_insert(rest);
        Ok(())
    }

    fn claim_output(&mut self, pin: u32, safe_level: Level) -> Result<(), HostError> {
        self.check_pin(pin)?;
        self.hardware()?;
        self.claims.insert(pin, Claim::Output { safe: safe_level });
        self.outputs.insert(pin, safe_level);
        Ok(())
    }

    fn claim_pwm(&mut self, pin: u32, spec: PwmSpec) -> Result<(), HostError> {
        self.check_pin(pin)?;
        self.hardware()?;
        self.claims.insert(pin, Claim::Pwm(spec));
        self.pwm.insert(pin, spec.safe_pulse_ns);
        Ok(())
    }

    fn read(&mut self, pin: u32) -> Result<Level, HostError> {
        match self.claims.get(&pin) {
            Some(Claim::Input(_)) => {}
            Some(Claim::Output { .. }) => {
                return Ok(self.outputs.get(&pin).copied().unwrap_or(Level::Low));
            }
            _ => return Err(HostError::Denied),
        }
        self.hardware()?;
        Ok(self.inputs.get(&pin).copied().unwrap_or(Level::Low))
    }

    fn write(&mut self, pin: u32, level: Level) -> Result<(), HostError> {
        if !matches!(self.claims.get(&pin), Some(Claim::Output { .. })) {
            return Err(HostError::Denied);
        }
        self.hardware()?;
        self.outputs.insert(pin, level);
        self.writes.push((pin, level, self.now_us));
        Ok(())
    }

    fn set_pwm(&mut self, pin: u32, pulse_ns: u64) -> Result<(), HostError> {
        if !matches!(self.claims.get(&pin), Some(Claim::Pwm(_))) {
            return Err(HostError::Denied);
        }
        self.hardware()?;
        self.pwm.insert(pin, pulse_ns);
        self.pwm_writes.push((pin, pulse_ns, self.now_us));
        Ok(())
    }

    fn arm_timer(&mut self, id: u64, after_us: u64) -> Result<(), HostError> {
        self.timers.insert(id, self.now_us + after_us);
        Ok(())
    }

    fn cancel_timer(&mut self, id: u64) {
        self.timers.remove(&id);
    }

    fn emit(&mut self, event: &str) {
        self.events.push(event.to_string());
    }

    fn set_state(&mut self, state: &serde_json::Value) {
        self.state = state.clone();
    }
}
