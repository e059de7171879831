//! The `switch` device kind: a toggle switch on one input pin, reported as `on`/`off`.
//! Wired to ground against the pull-up, so on reads low by default.
//!
//! The pin, the debounce and the state are the kit's binary input; this crate gives it its
//! words and its defaults.

use site_plugin_api::kit::{BinaryInput, InputConfig, InputKind, InputWords};
use site_plugin_api::parse_on_off;

pub enum SwitchKind {}

impl InputKind for SwitchKind {
    const KIND: &'static str = "switch";
    const DESCRIPTION: &'static str = "toggle switch, on or off";
    /// `sitectl sim` takes the gpioset words (on/off, 1/0, active/inactive).
    const WORDS: InputWords = InputWords {
        active: "on",
        rest: "off",
        a_kind: "a switch",
        accepts: "on or off (also 1/0, active/inactive)",
        parse: parse_on_off,
    };
    /// On connects the pin to ground against the pull-up.
    const ACTIVE_LOW: bool = true;
    const DEBOUNCE_MS: u64 = 20;
}

pub type Switch = BinaryInput<SwitchKind>;

pub type Config = InputConfig<SwitchKind>;

site_plugin_api::export_plugin!(Switch);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::kit::Pull;
    use site_plugin_api::{Device, FakeHost, Level, parse_config};

    const PIN: u32 = 21;

    /// A switch with the default config, idle (pulled up, so off).
    fn idle_switch() -> (FakeHost, Switch) {
        let mut host = FakeHost::with_pins(&[PIN]);
        let switch = host.create(r#"{"pin": 21}"#).unwrap();
        (host, switch)
    }

    #[test]
    fn defaults_are_pull_up_active_low_20ms() {
        let config: Config = parse_config(r#"{"pin": 21}"#).unwrap();

        assert_eq!(
            (config.pull, config.active_low, config.debounce_ms),
            (Pull::Up, true, 20)
        );
    }

    #[test]
    fn output_only_safe_is_an_unknown_key() {
        let err = parse_config::<Config>(r#"{"pin": 21, "safe": "off"}"#).unwrap_err();

        assert!(err.contains("unknown field `safe`"), "{err}");
    }

    #[test]
    fn idle_pulled_up_switch_is_off_at_create_without_event() {
        let (host, _switch) = idle_switch();

        assert_eq!(host.state_word(), Some("off"));
        assert!(host.events.is_empty());
    }

    #[test]
    fn flipping_on_pulls_the_pin_low_and_is_reported_at_once() {
        let (mut host, mut switch) = idle_switch();

        host.edge(&mut switch, PIN, Level::Low).unwrap();

        assert_eq!(host.take_events(), vec!["on"]);
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn flip_back_is_reported_when_the_20ms_lockout_ends() {
        let (mut host, mut switch) = idle_switch();
        host.edge(&mut switch, PIN, Level::Low).unwrap();
        host.edge(&mut switch, PIN, Level::High).unwrap();
        host.advance(&mut switch, 19_999).unwrap();
        let before = host.take_events();

        host.advance(&mut switch, 1).unwrap();

        assert_eq!(before, vec!["on"]);
        assert_eq!(host.take_events(), vec!["off"]);
    }

    #[test]
    fn simulate_takes_gpioset_words_at_active_low_levels() {
        let (_host, mut switch) = idle_switch();

        assert_eq!(switch.simulate("on"), Ok((PIN, Level::Low)));
        assert_eq!(switch.simulate("off"), Ok((PIN, Level::High)));
        assert_eq!(switch.simulate("1"), Ok((PIN, Level::Low)));
        assert_eq!(switch.simulate("inactive"), Ok((PIN, Level::High)));
    }

    #[test]
    fn simulate_unknown_value_names_what_is_accepted() {
        let (_host, mut switch) = idle_switch();

        let err = switch.simulate("pressed").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"pressed\": a switch accepts on or off (also 1/0, active/inactive)"
        );
    }

    #[test]
    fn kind_is_switch() {
        assert_eq!(Switch::KIND, "switch");
    }
}
