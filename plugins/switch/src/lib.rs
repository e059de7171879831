//! The `switch` device kind: a toggle switch on one input pin, reported as `on`/`off`.
//! Wired to ground against the pull-up, so on reads low by default.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Bias, Debouncer, Device, Host, Level, Role, parse_on_off};

const DEBOUNCE_TIMER: u64 = 1;
const MAX_DEBOUNCE_MS: u64 = 1000;

/// The internal bias resistor, as the config writes it (`Bias` itself spells `pull-up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    Up,
    Down,
    Off,
}

impl From<Pull> for Bias {
    fn from(pull: Pull) -> Bias {
        match pull {
            Pull::Up => Bias::PullUp,
            Pull::Down => Bias::PullDown,
            Pull::Off => Bias::Off,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    #[serde(default = "default_pull")]
    pub pull: Pull,
    /// On connects the pin to ground against the pull-up.
    #[serde(default = "default_active_low")]
    pub active_low: bool,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_pull() -> Pull {
    Pull::Up
}

fn default_active_low() -> bool {
    true
}

fn default_debounce_ms() -> u64 {
    20
}

#[derive(Debug)]
pub struct Switch {
    pin: u32,
    active_low: bool,
    debouncer: Debouncer,
}

impl Switch {
    fn word(&self) -> &'static str {
        if self.debouncer.level().is_high() != self.active_low {
            "on"
        } else {
            "off"
        }
    }

    fn publish(&self, host: &mut dyn Host) {
        host.set_state(&json!({ "state": self.word() }));
    }

    fn changed(&self, host: &mut dyn Host) {
        host.emit(self.word());
        self.publish(host);
    }
}

impl Device for Switch {
    const KIND: &'static str = "switch";
    const ROLE: Role = Role::Input;
    type Config = Config;

    fn check(config: &Config) -> Result<(), String> {
        if config.debounce_ms > MAX_DEBOUNCE_MS {
            return Err(format!(
                "debounce-ms must be at most {MAX_DEBOUNCE_MS} (got {})",
                config.debounce_ms
            ));
        }
        Ok(())
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        host.claim_input(config.pin, config.pull.into(), Level::active(false, config.active_low))
            .map_err(|e| format!("claiming GPIO {} as an input: {e}", config.pin))?;
        let level = host
            .read(config.pin)
            .map_err(|e| format!("reading GPIO {}: {e}", config.pin))?;
        let switch = Switch {
            pin: config.pin,
            active_low: config.active_low,
            debouncer: Debouncer::new(config.pin, DEBOUNCE_TIMER, config.debounce_ms, level),
        };
        switch.publish(host);
        Ok(switch)
    }

    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        pin: u32,
        level: Level,
        _at_us: u64,
    ) -> Result<(), String> {
        // The host delivers only our own pin; anything else is its bug, not a flip.
        if pin != self.pin {
            return Ok(());
        }
        if self.debouncer.on_edge(host, level)?.is_some() {
            self.changed(host);
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        if id == DEBOUNCE_TIMER && self.debouncer.lockout_ended(host)?.is_some() {
            self.changed(host);
        }
        Ok(())
    }

    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        let on = parse_on_off(value).ok_or_else(|| {
            format!(
                "unknown value \"{value}\": a switch accepts on or off (also 1/0, active/inactive)"
            )
        })?;
        Ok((self.pin, Level::active(on, self.active_low)))
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.debouncer.cancel(host);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Switch);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};

    const PIN: u32 = 21;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    fn switch(extra: &str) -> (FakeHost, Switch) {
        let config = config(extra);
        Switch::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        let switch = Switch::create(&mut host, config).unwrap();
        (host, switch)
    }

    #[test]
    fn defaults_are_pull_up_active_low_20ms() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                pull: Pull::Up,
                active_low: true,
                debounce_ms: 20,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 21, "safe": "off"}"#).unwrap_err();

        assert!(err.contains("safe"), "{err}");
    }

    #[test]
    fn unknown_pull_word_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 21, "pull": "sideways"}"#).unwrap_err();

        assert!(err.contains("sideways"), "{err}");
    }

    #[test]
    fn debounce_above_limit_is_rejected_naming_the_key() {
        let err = Switch::check(&config(r#""debounce-ms": 1500"#)).unwrap_err();

        assert!(err.contains("debounce-ms"), "{err}");
    }

    #[test]
    fn create_claims_input_with_pull_up() {
        let (host, _switch) = switch("");

        assert_eq!(host.claims.get(&PIN), Some(&Claim::Input(Bias::PullUp)));
    }

    #[test]
    fn idle_pulled_up_switch_is_off_at_create_without_event() {
        let (host, _switch) = switch("");

        assert_eq!(host.state, json!({"state": "off"}));
        assert!(host.events.is_empty());
    }

    #[test]
    fn flipping_on_is_reported_at_once() {
        let (mut host, mut switch) = switch("");

        host.edge(&mut switch, PIN, Level::Low).unwrap();

        assert_eq!(host.take_events(), vec!["on"]);
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn bounce_within_lockout_is_ignored() {
        let (mut host, mut switch) = switch("");
        host.edge(&mut switch, PIN, Level::Low).unwrap();

        host.edge(&mut switch, PIN, Level::High).unwrap();
        host.edge(&mut switch, PIN, Level::Low).unwrap();
        host.advance(&mut switch, 20_000).unwrap();

        assert_eq!(host.take_events(), vec!["on"]);
    }

    #[test]
    fn flip_back_within_lockout_is_reported_when_lockout_ends() {
        let (mut host, mut switch) = switch("");
        host.edge(&mut switch, PIN, Level::Low).unwrap();
        host.edge(&mut switch, PIN, Level::High).unwrap();

        host.advance(&mut switch, 20_000).unwrap();

        assert_eq!(host.take_events(), vec!["on", "off"]);
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn active_high_switch_is_on_when_pin_is_high() {
        let (mut host, mut switch) = switch(r#""pull": "down", "active-low": false"#);

        host.edge(&mut switch, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["on"]);
    }

    #[test]
    fn simulate_on_off_words_give_active_low_levels() {
        let (_host, mut switch) = switch("");

        assert_eq!(switch.simulate("on"), Ok((PIN, Level::Low)));
        assert_eq!(switch.simulate("off"), Ok((PIN, Level::High)));
        assert_eq!(switch.simulate("1"), Ok((PIN, Level::Low)));
    }

    #[test]
    fn simulate_unknown_value_names_what_is_accepted() {
        let (_host, mut switch) = switch("");

        let err = switch.simulate("pressed").unwrap_err();

        assert!(err.contains("on or off"), "{err}");
    }

    #[test]
    fn safe_state_cancels_the_lockout() {
        let (mut host, mut switch) = switch("");
        host.edge(&mut switch, PIN, Level::Low).unwrap();

        switch.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
    }
}
