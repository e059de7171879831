//! The `reed` device kind: a door's reed switch on one input pin, reported as `open`/`closed`.
//! Wired to ground against the pull-up, the magnet closes the contact while the door is shut,
//! so shut reads low (`closed`) and open reads high (`open`).
//!
//! The pin, the debounce and the state are the kit's binary input; this crate gives it its
//! words and its defaults.

use site_plugin_api::kit::{BinaryInput, InputConfig, InputKind, InputWords};

pub enum ReedKind {}

impl InputKind for ReedKind {
    const KIND: &'static str = "reed";
    const DESCRIPTION: &'static str = "reed switch: a door open or closed";
    const WORDS: InputWords = InputWords {
        active: "open",
        rest: "closed",
        a_kind: "a reed",
        accepts: "open or closed",
        parse: door_word,
    };
    /// Active means open. With the usual wiring (contact closed to ground while the door is
    /// shut) an open door reads high, so the default is active-high.
    const ACTIVE_LOW: bool = false;
    /// Longer than a button's: a door rattling in its frame bounces for tens of milliseconds.
    const DEBOUNCE_MS: u64 = 50;
}

/// No on/off words: "on" says nothing about whether a door is open.
fn door_word(word: &str) -> Option<bool> {
    match word {
        "open" => Some(true),
        "closed" | "close" => Some(false),
        _ => None,
    }
}

pub type Reed = BinaryInput<ReedKind>;

pub type Config = InputConfig<ReedKind>;

site_plugin_api::export_plugin!(Reed);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use site_plugin_api::kit::Pull;
    use site_plugin_api::{Device, FakeHost, Level, parse_config};

    const PIN: u32 = 16;

    /// A reed with the default config whose door starts shut (pin low).
    fn shut_reed() -> (FakeHost, Reed) {
        let mut host = FakeHost::with_pins(&[PIN]);
        host.inputs.insert(PIN, Level::Low);
        let reed = host.create(r#"{"pin": 16}"#).unwrap();
        (host, reed)
    }

    #[test]
    fn defaults_are_pull_up_active_high_50ms() {
        let config: Config = parse_config(r#"{"pin": 16}"#).unwrap();

        assert_eq!(
            (config.pull, config.active_low, config.debounce_ms),
            (Pull::Up, false, 50)
        );
    }

    #[test]
    fn button_only_hold_ms_is_an_unknown_key() {
        let err = parse_config::<Config>(r#"{"pin": 16, "hold-ms": 10}"#).unwrap_err();

        assert!(err.contains("unknown field `hold-ms`"), "{err}");
    }

    #[test]
    fn shut_door_reads_low_and_is_closed_at_create_without_event() {
        let (host, _reed) = shut_reed();

        assert_eq!(host.state, json!({"state": "closed"}));
        assert!(host.events.is_empty());
    }

    #[test]
    fn door_opening_is_reported_at_once() {
        let (mut host, mut reed) = shut_reed();

        host.edge(&mut reed, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["open"]);
        assert_eq!(host.state_word(), Some("open"));
    }

    #[test]
    fn door_rattling_shut_is_reported_when_the_50ms_lockout_ends() {
        let (mut host, mut reed) = shut_reed();
        host.edge(&mut reed, PIN, Level::High).unwrap();
        host.edge(&mut reed, PIN, Level::Low).unwrap();

        host.advance(&mut reed, 49_999).unwrap();
        let before = host.state_word().map(str::to_string);
        host.advance(&mut reed, 1).unwrap();

        assert_eq!(before.as_deref(), Some("open"));
        assert_eq!(host.take_events(), vec!["open", "closed"]);
    }

    #[test]
    fn simulate_open_and_closed_give_high_and_low() {
        let (_host, mut reed) = shut_reed();

        assert_eq!(reed.simulate("open"), Ok((PIN, Level::High)));
        assert_eq!(reed.simulate("closed"), Ok((PIN, Level::Low)));
        assert_eq!(reed.simulate("close"), Ok((PIN, Level::Low)));
    }

    #[test]
    fn simulate_takes_no_on_off_words_and_names_what_is_accepted() {
        let (_host, mut reed) = shut_reed();

        let err = reed.simulate("on").unwrap_err();

        assert_eq!(err, "unknown value \"on\": a reed accepts open or closed");
    }

    #[test]
    fn kind_is_reed() {
        assert_eq!(Reed::KIND, "reed");
    }
}
