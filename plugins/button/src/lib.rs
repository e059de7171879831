//! The `button` device kind: a push button on one input pin, reported as `pressed`/`released`
//! (and `held` once it has stayed pressed for `hold-ms`). Debounce is leading-edge, so site
//! logic sees a press as soon as the contact first closes.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Bias, Debouncer, Device, Host, Level, Role, parse_on_off};

const DEBOUNCE_TIMER: u64 = 1;
const HOLD_TIMER: u64 = 2;
const MAX_DEBOUNCE_MS: u64 = 1000;
const MAX_HOLD_MS: u64 = 60_000;

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
    /// The usual wiring is a button to ground against the pull-up: pressed reads low.
    #[serde(default = "default_active_low")]
    pub active_low: bool,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// Unset: no `held` event.
    #[serde(default)]
    pub hold_ms: Option<u64>,
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
pub struct Button {
    pin: u32,
    active_low: bool,
    hold_us: Option<u64>,
    debouncer: Debouncer,
    held: bool,
}

impl Button {
    fn pressed(&self) -> bool {
        self.debouncer.level().is_high() != self.active_low
    }

    fn publish(&self, host: &mut dyn Host) {
        let word = if self.pressed() {
            "pressed"
        } else {
            "released"
        };
        let state = if self.hold_us.is_some() {
            json!({ "state": word, "held": self.held })
        } else {
            json!({ "state": word })
        };
        host.set_state(&state);
    }

    fn lockout_ended(&mut self, host: &mut dyn Host) -> Result<(), String> {
        if self.debouncer.lockout_ended(host)?.is_some() {
            self.changed(host)?;
        }
        Ok(())
    }

    /// The debouncer accepted a change of level: report it and start or stop the hold clock.
    fn changed(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.held = false;
        if self.pressed() {
            if let Some(hold_us) = self.hold_us {
                host.arm_timer(HOLD_TIMER, hold_us)
                    .map_err(|e| format!("arming the hold timer: {e}"))?;
            }
            host.emit("pressed");
        } else {
            host.cancel_timer(HOLD_TIMER);
            host.emit("released");
        }
        self.publish(host);
        Ok(())
    }
}

impl Device for Button {
    const KIND: &'static str = "button";
    const ROLE: Role = Role::Input;
    type Config = Config;

    fn check(config: &Config) -> Result<(), String> {
        if config.debounce_ms > MAX_DEBOUNCE_MS {
            return Err(format!(
                "debounce-ms must be at most {MAX_DEBOUNCE_MS} (got {})",
                config.debounce_ms
            ));
        }
        if let Some(hold_ms) = config.hold_ms
            && !(1..=MAX_HOLD_MS).contains(&hold_ms)
        {
            return Err(format!("hold-ms must be 1..={MAX_HOLD_MS} (got {hold_ms})"));
        }
        Ok(())
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        host.claim_input(config.pin, config.pull.into(), Level::active(false, config.active_low))
            .map_err(|e| format!("claiming GPIO {} as an input: {e}", config.pin))?;
        let level = host
            .read(config.pin)
            .map_err(|e| format!("reading GPIO {}: {e}", config.pin))?;
        // A button already down at start is reported as pressed but neither emits nor starts
        // the hold clock: nobody pressed it in front of us.
        let button = Button {
            pin: config.pin,
            active_low: config.active_low,
            hold_us: config.hold_ms.map(|ms| ms.saturating_mul(1000)),
            debouncer: Debouncer::new(config.pin, DEBOUNCE_TIMER, config.debounce_ms, level),
            held: false,
        };
        button.publish(host);
        Ok(button)
    }

    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        pin: u32,
        level: Level,
        _at_us: u64,
    ) -> Result<(), String> {
        // The host delivers only our own pin; anything else is its bug, not a button press.
        if pin != self.pin {
            return Ok(());
        }
        if self.debouncer.on_edge(host, level)?.is_some() {
            self.changed(host)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        match id {
            DEBOUNCE_TIMER => self.lockout_ended(host)?,
            HOLD_TIMER if self.pressed() && !self.held => {
                self.held = true;
                host.emit("held");
                self.publish(host);
            }
            _ => {}
        }
        Ok(())
    }

    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        let pressed = match value.trim().to_ascii_lowercase().as_str() {
            "pressed" | "press" => true,
            "released" | "release" => false,
            other => parse_on_off(other).ok_or_else(|| {
                format!(
                    "unknown value \"{value}\": a button accepts pressed or released (or on/off)"
                )
            })?,
        };
        Ok((self.pin, Level::active(pressed, self.active_low)))
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.debouncer.cancel(host);
        host.cancel_timer(HOLD_TIMER);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Button);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};

    const PIN: u32 = 5;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    fn button(extra: &str) -> (FakeHost, Button) {
        let config = config(extra);
        Button::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        let button = Button::create(&mut host, config).unwrap();
        (host, button)
    }

    fn press(host: &mut FakeHost, button: &mut Button) {
        host.edge(button, PIN, Level::Low).unwrap();
    }

    fn release(host: &mut FakeHost, button: &mut Button) {
        host.edge(button, PIN, Level::High).unwrap();
    }

    #[test]
    fn defaults_are_pull_up_active_low_20ms_no_hold() {
        let config = config("");

        assert_eq!(
            config,
            Config {
                pin: PIN,
                pull: Pull::Up,
                active_low: true,
                debounce_ms: 20,
                hold_ms: None,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 5, "colour": "red"}"#).unwrap_err();

        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn pull_takes_up_down_off_and_rejects_bias_spelling() {
        assert_eq!(config(r#""pull": "down""#).pull, Pull::Down);
        assert_eq!(config(r#""pull": "off""#).pull, Pull::Off);

        let err = parse_config::<Config>(r#"{"pin": 5, "pull": "pull-up"}"#).unwrap_err();

        assert!(err.contains("pull-up"), "{err}");
    }

    #[test]
    fn debounce_above_limit_is_rejected_naming_the_key() {
        let err = Button::check(&config(r#""debounce-ms": 1001"#)).unwrap_err();

        assert!(err.contains("debounce-ms"), "{err}");
    }

    #[test]
    fn debounce_at_limit_is_accepted() {
        assert_eq!(Button::check(&config(r#""debounce-ms": 1000"#)), Ok(()));
    }

    #[test]
    fn hold_of_zero_is_rejected_naming_the_key() {
        let err = Button::check(&config(r#""hold-ms": 0"#)).unwrap_err();

        assert!(err.contains("hold-ms"), "{err}");
    }

    #[test]
    fn create_claims_input_with_configured_pull() {
        let (host, _button) = button(r#""pull": "down""#);

        assert_eq!(host.claims.get(&PIN), Some(&Claim::Input(Bias::PullDown)));
    }

    #[test]
    fn create_publishes_released_from_the_pin_and_emits_nothing() {
        let (host, _button) = button("");

        assert_eq!(host.state, json!({"state": "released"}));
        assert!(host.events.is_empty());
    }

    #[test]
    fn create_with_button_down_publishes_pressed_without_event() {
        let mut host = FakeHost::with_pins(&[PIN]);
        host.inputs.insert(PIN, Level::Low);

        let _button = Button::create(&mut host, config("")).unwrap();

        assert_eq!(host.state_word(), Some("pressed"));
        assert!(host.events.is_empty());
    }

    #[test]
    fn create_fails_when_the_host_refuses_the_pin() {
        let mut host = FakeHost::with_pins(&[PIN + 1]);

        let err = Button::create(&mut host, config("")).unwrap_err();

        assert!(err.contains("GPIO 5"), "{err}");
    }

    #[test]
    fn press_is_reported_at_once() {
        let (mut host, mut button) = button("");

        press(&mut host, &mut button);

        assert_eq!(host.take_events(), vec!["pressed"]);
        assert_eq!(host.state_word(), Some("pressed"));
    }

    #[test]
    fn bounce_within_lockout_is_ignored() {
        let (mut host, mut button) = button("");
        press(&mut host, &mut button);

        host.advance(&mut button, 5_000).unwrap();
        release(&mut host, &mut button);
        press(&mut host, &mut button);
        host.advance(&mut button, 20_000).unwrap();

        assert_eq!(host.take_events(), vec!["pressed"]);
        assert_eq!(host.state_word(), Some("pressed"));
    }

    #[test]
    fn release_within_lockout_is_reported_when_lockout_ends() {
        let (mut host, mut button) = button("");
        press(&mut host, &mut button);
        release(&mut host, &mut button);
        host.take_events();

        host.advance(&mut button, 20_000).unwrap();

        assert_eq!(host.take_events(), vec!["released"]);
        assert_eq!(host.state_word(), Some("released"));
    }

    #[test]
    fn release_after_lockout_is_reported_at_once() {
        let (mut host, mut button) = button("");
        press(&mut host, &mut button);
        host.advance(&mut button, 20_000).unwrap();
        host.take_events();

        release(&mut host, &mut button);

        assert_eq!(host.take_events(), vec!["released"]);
    }

    #[test]
    fn zero_debounce_reports_every_change() {
        let (mut host, mut button) = button(r#""debounce-ms": 0"#);

        press(&mut host, &mut button);
        release(&mut host, &mut button);
        press(&mut host, &mut button);

        assert_eq!(host.take_events(), vec!["pressed", "released", "pressed"]);
    }

    #[test]
    fn active_high_button_is_pressed_when_pin_is_high() {
        let (mut host, mut button) = button(r#""pull": "down", "active-low": false"#);

        host.edge(&mut button, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["pressed"]);
    }

    #[test]
    fn edge_on_another_pin_is_ignored() {
        let (mut host, mut button) = button("");

        host.edge(&mut button, PIN + 1, Level::Low).unwrap();

        assert!(host.events.is_empty());
        assert_eq!(host.state_word(), Some("released"));
    }

    #[test]
    fn held_is_emitted_once_after_hold_ms() {
        let (mut host, mut button) = button(r#""hold-ms": 1000"#);
        press(&mut host, &mut button);

        host.advance(&mut button, 999_999).unwrap();
        let before = host.take_events();
        host.advance(&mut button, 5_000_000).unwrap();

        assert_eq!(before, vec!["pressed"]);
        assert_eq!(host.take_events(), vec!["held"]);
        assert_eq!(host.state, json!({"state": "pressed", "held": true}));
    }

    #[test]
    fn release_before_hold_ms_cancels_held() {
        let (mut host, mut button) = button(r#""hold-ms": 1000"#);
        press(&mut host, &mut button);
        host.advance(&mut button, 500_000).unwrap();

        release(&mut host, &mut button);
        host.advance(&mut button, 2_000_000).unwrap();

        assert_eq!(host.take_events(), vec!["pressed", "released"]);
        assert_eq!(host.state, json!({"state": "released", "held": false}));
    }

    #[test]
    fn release_after_held_clears_held() {
        let (mut host, mut button) = button(r#""hold-ms": 100"#);
        press(&mut host, &mut button);
        host.advance(&mut button, 200_000).unwrap();

        release(&mut host, &mut button);

        assert_eq!(host.state, json!({"state": "released", "held": false}));
    }

    #[test]
    fn state_has_no_held_field_without_hold_ms() {
        let (mut host, mut button) = button("");

        press(&mut host, &mut button);

        assert_eq!(host.state, json!({"state": "pressed"}));
    }

    #[test]
    fn simulate_pressed_gives_low_for_active_low() {
        let (_host, mut button) = button("");

        assert_eq!(button.simulate("pressed"), Ok((PIN, Level::Low)));
        assert_eq!(button.simulate("press"), Ok((PIN, Level::Low)));
        assert_eq!(button.simulate("on"), Ok((PIN, Level::Low)));
    }

    #[test]
    fn simulate_released_gives_high_for_active_low() {
        let (_host, mut button) = button("");

        assert_eq!(button.simulate("released"), Ok((PIN, Level::High)));
        assert_eq!(button.simulate("release"), Ok((PIN, Level::High)));
        assert_eq!(button.simulate("0"), Ok((PIN, Level::High)));
    }

    #[test]
    fn simulate_unknown_value_names_what_is_accepted() {
        let (_host, mut button) = button("");

        let err = button.simulate("open").unwrap_err();

        assert!(err.contains("pressed or released"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn button_takes_no_commands() {
        let (mut host, mut button) = button("");

        assert!(button.command(&mut host, "on").is_err());
    }

    #[test]
    fn safe_state_cancels_timers() {
        let (mut host, mut button) = button(r#""hold-ms": 1000"#);
        press(&mut host, &mut button);

        button.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
    }
}
