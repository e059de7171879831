//! The `button` device kind: a push button on one input pin, reported as `pressed`/`released`
//! (and `held` once it has stayed pressed for `hold-ms`). Debounce is leading-edge, so site
//! logic sees a press as soon as the contact first closes.
//!
//! The pin and the debounce are the kit's debounced input; the hold clock is the button's own.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::kit::{DebouncedInput, InputWords, Pull, check_debounce_ms};
use site_plugin_api::{Device, Host, Level, Role, parse_on_off};

const DEBOUNCE_TIMER: u64 = 1;
const HOLD_TIMER: u64 = 2;
const MAX_HOLD_MS: u64 = 60_000;

const WORDS: InputWords = InputWords {
    active: "pressed",
    rest: "released",
    a_kind: "a button",
    accepts: "pressed or released (or on/off)",
    parse: button_word,
};

/// `sitectl sim` also takes the gpioset words: `on` presses, `off` releases.
fn button_word(word: &str) -> Option<bool> {
    match word {
        "pressed" | "press" => Some(true),
        "released" | "release" => Some(false),
        other => parse_on_off(other),
    }
}

/// Its own config rather than the kit's `InputConfig`: `hold-ms` is one key more, and serde
/// cannot flatten a shared table into one that denies unknown keys.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    #[serde(default)]
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

fn default_active_low() -> bool {
    true
}

fn default_debounce_ms() -> u64 {
    20
}

#[derive(Debug)]
pub struct Button {
    input: DebouncedInput,
    hold_us: Option<u64>,
    held: bool,
}

impl Button {
    fn publish(&self, host: &mut dyn Host) {
        let word = WORDS.word(self.input.active());
        let state = if self.hold_us.is_some() {
            json!({ "state": word, "held": self.held })
        } else {
            json!({ "state": word })
        };
        host.set_state(&state);
    }

    /// The debouncer accepted a change of level: report it and start or stop the hold clock.
    fn changed(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.held = false;
        let pressed = self.input.active();
        if pressed {
            if let Some(hold_us) = self.hold_us {
                host.arm_timer(HOLD_TIMER, hold_us)
                    .map_err(|e| format!("arming the hold timer: {e}"))?;
            }
        } else {
            host.cancel_timer(HOLD_TIMER);
        }
        host.emit(WORDS.word(pressed));
        self.publish(host);
        Ok(())
    }
}

impl Device for Button {
    const KIND: &'static str = "button";
    const ROLE: Role = Role::Input;
    const DESCRIPTION: &'static str = "push button, debounced, with long press";
    type Config = Config;

    fn check(config: &Config) -> Result<(), String> {
        check_debounce_ms(config.debounce_ms)?;
        if let Some(hold_ms) = config.hold_ms
            && !(1..=MAX_HOLD_MS).contains(&hold_ms)
        {
            return Err(format!("hold-ms must be 1..={MAX_HOLD_MS} (got {hold_ms})"));
        }
        Ok(())
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        let input = DebouncedInput::claim(
            host,
            config.pin,
            config.pull,
            config.active_low,
            config.debounce_ms,
            DEBOUNCE_TIMER,
        )?;
        // A button already down at start is reported as pressed but neither emits nor starts
        // the hold clock: nobody pressed it in front of us.
        let button = Button {
            input,
            hold_us: config.hold_ms.map(|ms| ms.saturating_mul(1000)),
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
        if self.input.on_edge(host, pin, level)? {
            self.changed(host)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        if id == HOLD_TIMER {
            if self.input.active() && !self.held {
                self.held = true;
                host.emit("held");
                self.publish(host);
            }
        } else if self.input.on_timer(host, id)? {
            self.changed(host)?;
        }
        Ok(())
    }

    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        self.input.simulate(&WORDS, value)
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.input.cancel(host);
        host.cancel_timer(HOLD_TIMER);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Button);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Bias, Claim, FakeHost, config_json, parse_config};

    const PIN: u32 = 5;

    fn config(keys: &str) -> Config {
        parse_config(&config_json(PIN, keys)).unwrap()
    }

    fn button(keys: &str) -> (FakeHost, Button) {
        FakeHost::with_device(PIN, keys).unwrap()
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
    fn debounce_above_limit_is_rejected_naming_the_key() {
        let err = Button::check(&config(r#""debounce-ms": 1001"#)).unwrap_err();

        assert!(err.contains("debounce-ms"), "{err}");
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

        let _button: Button = host.create(&config_json(PIN, "")).unwrap();

        assert_eq!(host.state_word(), Some("pressed"));
        assert!(host.events.is_empty());
    }

    #[test]
    fn press_is_reported_at_once() {
        let (mut host, mut button) = button("");

        press(&mut host, &mut button);

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

        assert_eq!(
            err,
            "unknown value \"open\": a button accepts pressed or released (or on/off)"
        );
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
