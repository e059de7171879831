//! The `siren` device kind: a siren (through a transistor or relay) on one output pin, `on` or
//! `off`. A `pulsed` siren alternates `on-ms` sounding and `off-ms` silent on a host timer while
//! it is on. Its safe state is always off: a fault or a stop silences it.
//!
//! The pin is the kit's on/off output and takes the same `sitectl set` words; the pattern is
//! the siren's own.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::kit::{OnOffPin, on_off_or_toggle};
use site_plugin_api::{Device, Host, Role};

const PULSE_TIMER: u64 = 1;
const MIN_PHASE_MS: u64 = 10;
const MAX_PHASE_MS: u64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Steady,
    Pulsed,
}

impl Pattern {
    fn word(self) -> &'static str {
        match self {
            Pattern::Steady => "steady",
            Pattern::Pulsed => "pulsed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    /// For drivers (some relay boards) that sound the siren when the pin is low.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_pattern")]
    pub pattern: Pattern,
    /// Pulsed only: how long each sounding phase lasts.
    #[serde(default = "default_phase_ms")]
    pub on_ms: u64,
    /// Pulsed only: how long each silent phase lasts.
    #[serde(default = "default_phase_ms")]
    pub off_ms: u64,
}

fn default_pattern() -> Pattern {
    Pattern::Steady
}

fn default_phase_ms() -> u64 {
    500
}

#[derive(Debug)]
pub struct Siren {
    /// On while the siren is sounding at this moment.
    output: OnOffPin,
    pattern: Pattern,
    on_us: u64,
    off_us: u64,
    /// Commanded on (the alarm is raised), whether or not a pulse is sounding right now.
    on: bool,
}

impl Siren {
    fn publish(&self, host: &mut dyn Host) {
        host.set_state(&json!({
            "state": if self.on { "on" } else { "off" },
            "pattern": self.pattern.word(),
            "sounding": self.output.is_on(),
        }));
    }

    fn arm_phase(&mut self, host: &mut dyn Host) -> Result<(), String> {
        let phase_us = if self.output.is_on() {
            self.on_us
        } else {
            self.off_us
        };
        host.arm_timer(PULSE_TIMER, phase_us)
            .map_err(|e| format!("arming the pulse timer: {e}"))
    }

    fn turn_on(&mut self, host: &mut dyn Host) -> Result<(), String> {
        // Already on: restarting the pattern would only stretch or cut the current phase.
        if !self.on {
            self.output.set(host, true)?;
            self.on = true;
            if self.pattern == Pattern::Pulsed {
                self.arm_phase(host)?;
            }
        }
        self.publish(host);
        Ok(())
    }

    fn turn_off(&mut self, host: &mut dyn Host) -> Result<(), String> {
        host.cancel_timer(PULSE_TIMER);
        self.on = false;
        self.output.set(host, false)?;
        self.publish(host);
        Ok(())
    }
}

fn check_phase(key: &str, ms: u64) -> Result<(), String> {
    if (MIN_PHASE_MS..=MAX_PHASE_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "{key} must be {MIN_PHASE_MS}..={MAX_PHASE_MS} (got {ms})"
        ))
    }
}

impl Device for Siren {
    const KIND: &'static str = "siren";
    const ROLE: Role = Role::Output;
    const DESCRIPTION: &'static str = "siren, steady or pulsed";
    type Config = Config;

    fn check(config: &Config) -> Result<(), String> {
        check_phase("on-ms", config.on_ms)?;
        check_phase("off-ms", config.off_ms)
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        let siren = Siren {
            output: OnOffPin::claim(host, config.pin, config.active_low, false)?,
            pattern: config.pattern,
            on_us: config.on_ms.saturating_mul(1000),
            off_us: config.off_ms.saturating_mul(1000),
            on: false,
        };
        siren.publish(host);
        Ok(siren)
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        // A pulse already queued when the siren was turned off must not sound it again.
        if id != PULSE_TIMER || !self.on {
            return Ok(());
        }
        self.output.set(host, !self.output.is_on())?;
        self.arm_phase(host)?;
        self.publish(host);
        Ok(())
    }

    fn command(&mut self, host: &mut dyn Host, value: &str) -> Result<(), String> {
        if on_off_or_toggle(value, self.on, "a siren")? {
            self.turn_on(host)
        } else {
            self.turn_off(host)
        }
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.turn_off(host)
    }
}

site_plugin_api::export_plugin!(Siren);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, Level, config_json, parse_config};

    const PIN: u32 = 22;

    fn config(keys: &str) -> Config {
        parse_config(&config_json(PIN, keys)).unwrap()
    }

    fn siren(keys: &str) -> (FakeHost, Siren) {
        FakeHost::with_device(PIN, keys).unwrap()
    }

    const PULSED: &str = r#""pattern": "pulsed", "on-ms": 100, "off-ms": 300"#;

    fn level(host: &FakeHost) -> Option<Level> {
        host.outputs.get(&PIN).copied()
    }

    #[test]
    fn defaults_are_active_high_steady_500ms() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                active_low: false,
                pattern: Pattern::Steady,
                on_ms: 500,
                off_ms: 500,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 22, "safe": "on"}"#).unwrap_err();

        assert!(err.contains("safe"), "{err}");
    }

    #[test]
    fn unknown_pattern_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 22, "pattern": "wail"}"#).unwrap_err();

        assert!(err.contains("wail"), "{err}");
    }

    #[test]
    fn on_ms_below_range_is_rejected_naming_the_key() {
        let err = Siren::check(&config(r#""on-ms": 9"#)).unwrap_err();

        assert!(err.contains("on-ms"), "{err}");
    }

    #[test]
    fn off_ms_above_range_is_rejected_naming_the_key() {
        let err = Siren::check(&config(r#""off-ms": 60001"#)).unwrap_err();

        assert!(err.contains("off-ms"), "{err}");
    }

    #[test]
    fn phase_range_bounds_are_accepted() {
        assert_eq!(
            Siren::check(&config(r#""on-ms": 10, "off-ms": 60000"#)),
            Ok(())
        );
    }

    #[test]
    fn create_claims_output_silent_and_publishes_off() {
        let (host, _siren) = siren("");

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::Low })
        );
        assert_eq!(
            host.state,
            json!({"state": "off", "pattern": "steady", "sounding": false})
        );
    }

    #[test]
    fn active_low_siren_is_claimed_high() {
        let (host, _siren) = siren(r#""active-low": true"#);

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::High })
        );
    }

    #[test]
    fn steady_on_drives_the_pin_and_arms_no_timer() {
        let (mut host, mut siren) = siren("");

        siren.command(&mut host, "on").unwrap();

        assert_eq!(level(&host), Some(Level::High));
        assert!(host.timers.is_empty());
        assert_eq!(
            host.state,
            json!({"state": "on", "pattern": "steady", "sounding": true})
        );
    }

    #[test]
    fn steady_off_silences_it() {
        let (mut host, mut siren) = siren("");
        siren.command(&mut host, "on").unwrap();

        siren.command(&mut host, "off").unwrap();

        assert_eq!(level(&host), Some(Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn pulsed_on_sounds_at_once() {
        let (mut host, mut siren) = siren(PULSED);

        siren.command(&mut host, "on").unwrap();

        assert_eq!(level(&host), Some(Level::High));
        assert_eq!(host.timers.get(&PULSE_TIMER), Some(&100_000));
    }

    #[test]
    fn siren_pulsed_alternates_on_timer() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();

        host.advance(&mut siren, 1_000_000).unwrap();

        let changes: Vec<(Level, u64)> = host.writes.iter().map(|&(_, l, at)| (l, at)).collect();
        assert_eq!(
            changes,
            vec![
                (Level::High, 0),
                (Level::Low, 100_000),
                (Level::High, 400_000),
                (Level::Low, 500_000),
                (Level::High, 800_000),
                (Level::Low, 900_000),
            ]
        );
    }

    #[test]
    fn pulsed_state_shows_sounding_phase() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();

        host.advance(&mut siren, 150_000).unwrap();

        assert_eq!(
            host.state,
            json!({"state": "on", "pattern": "pulsed", "sounding": false})
        );
    }

    #[test]
    fn pulsed_off_cancels_the_timer_and_stays_silent() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();
        host.advance(&mut siren, 50_000).unwrap();

        siren.command(&mut host, "off").unwrap();
        host.advance(&mut siren, 2_000_000).unwrap();

        assert!(host.timers.is_empty());
        assert_eq!(level(&host), Some(Level::Low));
        assert_eq!(host.writes.len(), 2);
    }

    #[test]
    fn stale_pulse_after_off_is_ignored() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();
        siren.command(&mut host, "off").unwrap();

        siren.on_timer(&mut host, PULSE_TIMER).unwrap();

        assert_eq!(level(&host), Some(Level::Low));
        assert!(host.timers.is_empty());
    }

    #[test]
    fn on_while_on_does_not_restart_the_pattern() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();
        host.advance(&mut siren, 50_000).unwrap();

        siren.command(&mut host, "on").unwrap();

        assert_eq!(host.timers.get(&PULSE_TIMER), Some(&100_000));
        assert_eq!(host.writes.len(), 1);
    }

    #[test]
    fn toggle_turns_it_on_then_off() {
        let (mut host, mut siren) = siren("");

        siren.command(&mut host, "toggle").unwrap();
        let first = host.state_word().map(str::to_string);
        siren.command(&mut host, "toggle").unwrap();

        assert_eq!(first.as_deref(), Some("on"));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn unknown_command_names_a_siren_and_what_it_accepts() {
        let (mut host, mut siren) = siren("");

        let err = siren.command(&mut host, "loud").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"loud\": a siren accepts on, off or toggle (also 1/0, active/inactive)"
        );
        assert!(host.writes.is_empty());
    }

    #[test]
    fn failed_write_is_an_error_and_keeps_it_off() {
        let (mut host, mut siren) = siren(PULSED);
        host.fail_hardware = true;

        let err = siren.command(&mut host, "on").unwrap_err();

        assert!(err.contains("GPIO 22"), "{err}");
        assert_eq!(host.state_word(), Some("off"));
        assert!(host.timers.is_empty());
    }

    #[test]
    fn safe_state_silences_and_cancels() {
        let (mut host, mut siren) = siren(PULSED);
        siren.command(&mut host, "on").unwrap();

        siren.safe_state(&mut host).unwrap();

        assert_eq!(level(&host), Some(Level::Low));
        assert!(host.timers.is_empty());
        assert_eq!(host.state_word(), Some("off"));
    }
}
