//! A debounced binary input: one pin with a pull and `active-low`, read through the
//! leading-edge [`Debouncer`]. [`DebouncedInput`] is the building block (the button adds its
//! hold clock on top); [`BinaryInput`] is the whole device for kinds that only report their two
//! states (reed, switch).

use super::unknown_value;
use crate::debounce::Debouncer;
use crate::device::{Device, Role};
use crate::host::{Bias, Host, Level};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::marker::PhantomData;

/// The longest debounce lockout a config may ask for.
pub const MAX_DEBOUNCE_MS: u64 = 1000;

/// The `check` of `debounce-ms`, for every input kind.
pub fn check_debounce_ms(debounce_ms: u64) -> Result<(), String> {
    if debounce_ms > MAX_DEBOUNCE_MS {
        return Err(format!(
            "debounce-ms must be at most {MAX_DEBOUNCE_MS} (got {debounce_ms})"
        ));
    }
    Ok(())
}

/// The internal bias resistor, as the config writes it (`Bias` itself spells `pull-up`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// The usual wiring: the contact connects the pin to ground against the pull-up.
    #[default]
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

/// How an input kind names its two states, to site logic and to `sitectl sim`.
#[derive(Clone, Copy, Debug)]
pub struct InputWords {
    /// The state, and the event on becoming so, while the input is active (`pressed`).
    pub active: &'static str,
    /// The same at rest (`released`).
    pub rest: &'static str,
    /// How error messages name the device: "a button".
    pub a_kind: &'static str,
    /// What `sitectl sim` takes, as the error for an unknown value lists it.
    pub accepts: &'static str,
    /// Reads a trimmed, lower-case `sitectl sim` value: `Some(true)` for active.
    pub parse: fn(&str) -> Option<bool>,
}

impl InputWords {
    pub fn word(&self, active: bool) -> &'static str {
        if active { self.active } else { self.rest }
    }

    /// Whether the `sitectl sim` value `value` asks for the active state.
    pub fn parse_sim(&self, value: &str) -> Result<bool, String> {
        (self.parse)(&value.trim().to_ascii_lowercase())
            .ok_or_else(|| unknown_value(value, self.a_kind, self.accepts))
    }
}

/// One input pin read through a debouncer, as active or at rest.
#[derive(Debug)]
pub struct DebouncedInput {
    pin: u32,
    active_low: bool,
    debouncer: Debouncer,
}

impl DebouncedInput {
    /// Claims `pin` (a simulated pin starts at rest) and takes its current level as the
    /// debounced one. An input already active at start is not a change anybody made in front
    /// of us, so the caller publishes it without an event. `timer_id` is the device's id for
    /// the debounce lockout.
    pub fn claim(
        host: &mut dyn Host,
        pin: u32,
        pull: Pull,
        active_low: bool,
        debounce_ms: u64,
        timer_id: u64,
    ) -> Result<Self, String> {
        host.claim_input(pin, pull.into(), Level::active(false, active_low))
            .map_err(|e| format!("claiming GPIO {pin} as an input: {e}"))?;
        let level = host
            .read(pin)
            .map_err(|e| format!("reading GPIO {pin}: {e}"))?;
        Ok(DebouncedInput {
            pin,
            active_low,
            debouncer: Debouncer::new(pin, timer_id, debounce_ms, level),
        })
    }

    /// The debounced state.
    pub fn active(&self) -> bool {
        self.debouncer.level().is_high() != self.active_low
    }

    /// An edge from the host. Returns whether it changed the debounced state.
    pub fn on_edge(&mut self, host: &mut dyn Host, pin: u32, level: Level) -> Result<bool, String> {
        // The host delivers only our own pin; anything else is its bug, not a change of state.
        if pin != self.pin {
            return Ok(false);
        }
        Ok(self.debouncer.on_edge(host, level)?.is_some())
    }

    /// A timer fired. Returns whether it was the lockout's and the state changed behind it.
    pub fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<bool, String> {
        if id != self.debouncer.timer_id() {
            return Ok(false);
        }
        Ok(self.debouncer.lockout_ended(host)?.is_some())
    }

    /// The pin and level that would make this input report the `sitectl sim` value `value`.
    pub fn simulate(&self, words: &InputWords, value: &str) -> Result<(u32, Level), String> {
        let active = words.parse_sim(value)?;
        Ok((self.pin, Level::active(active, self.active_low)))
    }

    /// Drops a running lockout (for `safe_state`).
    pub fn cancel(&mut self, host: &mut dyn Host) {
        self.debouncer.cancel(host);
    }
}

/// What makes one binary input kind: its name, its words and its defaults. Implemented by an
/// empty enum in each plugin, which then exports `BinaryInput<ItsKind>`.
pub trait InputKind: 'static {
    /// The `kind = "..."` the plugin implements.
    const KIND: &'static str;
    /// One line for the daemon log ("reed switch on a door").
    const DESCRIPTION: &'static str = "";
    /// Its state and event words, and what `sitectl sim` takes.
    const WORDS: InputWords;
    /// The `active-low` default: whether this kind's usual wiring reads low when active.
    const ACTIVE_LOW: bool;
    /// The `debounce-ms` default: how long this kind's contact bounces.
    const DEBOUNCE_MS: u64;
}

/// The config of a [`BinaryInput`]; `K` supplies the defaults.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, bound = "")]
pub struct InputConfig<K: InputKind> {
    pub pin: u32,
    #[serde(default)]
    pub pull: Pull,
    #[serde(default = "default_active_low::<K>")]
    pub active_low: bool,
    #[serde(default = "default_debounce_ms::<K>")]
    pub debounce_ms: u64,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

fn default_active_low<K: InputKind>() -> bool {
    K::ACTIVE_LOW
}

fn default_debounce_ms<K: InputKind>() -> u64 {
    K::DEBOUNCE_MS
}

// By hand: a derived impl would demand `K: Debug` of the kind marker, which is never a value.
impl<K: InputKind> fmt::Debug for InputConfig<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputConfig")
            .field("kind", &K::KIND)
            .field("pin", &self.pin)
            .field("pull", &self.pull)
            .field("active_low", &self.active_low)
            .field("debounce_ms", &self.debounce_ms)
            .finish()
    }
}

/// The one timer a [`BinaryInput`] arms.
const DEBOUNCE_TIMER: u64 = 1;

/// A device that is one debounced input reported in two words: an event on every accepted
/// change, and `{"state": word}`.
pub struct BinaryInput<K> {
    input: DebouncedInput,
    kind: PhantomData<fn() -> K>,
}

impl<K: InputKind> fmt::Debug for BinaryInput<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(K::KIND).field("input", &self.input).finish()
    }
}

impl<K: InputKind> BinaryInput<K> {
    fn word(&self) -> &'static str {
        K::WORDS.word(self.input.active())
    }

    fn publish(&self, host: &mut dyn Host) {
        host.set_state(&json!({ "state": self.word() }));
    }

    fn changed(&self, host: &mut dyn Host) {
        host.emit(self.word());
        self.publish(host);
    }
}

impl<K: InputKind> Device for BinaryInput<K> {
    const KIND: &'static str = K::KIND;
    const ROLE: Role = Role::Input;
    const DESCRIPTION: &'static str = K::DESCRIPTION;
    type Config = InputConfig<K>;

    fn check(config: &InputConfig<K>) -> Result<(), String> {
        check_debounce_ms(config.debounce_ms)
    }

    fn create(host: &mut dyn Host, config: InputConfig<K>) -> Result<Self, String> {
        let input = DebouncedInput::claim(
            host,
            config.pin,
            config.pull,
            config.active_low,
            config.debounce_ms,
            DEBOUNCE_TIMER,
        )?;
        let device = BinaryInput {
            input,
            kind: PhantomData,
        };
        device.publish(host);
        Ok(device)
    }

    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        pin: u32,
        level: Level,
        _at_us: u64,
    ) -> Result<(), String> {
        if self.input.on_edge(host, pin, level)? {
            self.changed(host);
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        if self.input.on_timer(host, id)? {
            self.changed(host);
        }
        Ok(())
    }

    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        self.input.simulate(&K::WORDS, value)
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.input.cancel(host);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::parse_config;
    use crate::fake::{Claim, FakeHost, config_json};

    const PIN: u32 = 5;
    const LOCKOUT_US: u64 = 30_000;

    /// A kind that exists only for these tests, so they hold for every binary input. Its
    /// `active-low` default is not serde's and its debounce is no real kind's, so a test sees
    /// where each came from.
    enum ContactKind {}

    impl InputKind for ContactKind {
        const KIND: &'static str = "contact";
        const WORDS: InputWords = InputWords {
            active: "made",
            rest: "broken",
            a_kind: "a contact",
            accepts: "made or broken",
            parse: contact_word,
        };
        const ACTIVE_LOW: bool = true;
        const DEBOUNCE_MS: u64 = LOCKOUT_US / 1000;
    }

    fn contact_word(word: &str) -> Option<bool> {
        match word {
            "made" | "make" => Some(true),
            "broken" => Some(false),
            _ => None,
        }
    }

    type Contact = BinaryInput<ContactKind>;

    fn config(keys: &str) -> InputConfig<ContactKind> {
        parse_config(&config_json(PIN, keys)).unwrap()
    }

    /// A contact at rest (active-low: pin high) unless `keys` say otherwise.
    fn contact(keys: &str) -> (FakeHost, Contact) {
        FakeHost::with_device(PIN, keys).unwrap()
    }

    /// The levels of the default, active-low contact.
    const MADE: Level = Level::Low;
    const BROKEN: Level = Level::High;

    #[test]
    fn defaults_are_pull_up_and_the_kinds_own() {
        let config = config("");

        assert_eq!(
            (
                config.pin,
                config.pull,
                config.active_low,
                config.debounce_ms
            ),
            (PIN, Pull::Up, true, 30)
        );
    }

    #[test]
    fn configured_values_override_the_kinds_defaults() {
        let config = config(r#""active-low": false, "debounce-ms": 7"#);

        assert_eq!((config.active_low, config.debounce_ms), (false, 7));
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err =
            parse_config::<InputConfig<ContactKind>>(r#"{"pin": 5, "hold-ms": 10}"#).unwrap_err();

        assert!(err.contains("hold-ms"), "{err}");
    }

    #[test]
    fn pull_takes_up_down_off_and_rejects_bias_spelling() {
        assert_eq!(config(r#""pull": "down""#).pull, Pull::Down);
        assert_eq!(config(r#""pull": "off""#).pull, Pull::Off);

        let err = parse_config::<InputConfig<ContactKind>>(r#"{"pin": 5, "pull": "pull-up"}"#)
            .unwrap_err();

        assert!(err.contains("pull-up"), "{err}");
    }

    #[test]
    fn debounce_above_limit_is_rejected_naming_the_key() {
        let err = Contact::check(&config(r#""debounce-ms": 1001"#)).unwrap_err();

        assert_eq!(err, "debounce-ms must be at most 1000 (got 1001)");
    }

    #[test]
    fn debounce_at_limit_is_accepted() {
        assert_eq!(Contact::check(&config(r#""debounce-ms": 1000"#)), Ok(()));
    }

    #[test]
    fn create_claims_input_with_configured_pull() {
        let (host, _contact) = contact(r#""pull": "down""#);

        assert_eq!(host.claims.get(&PIN), Some(&Claim::Input(Bias::PullDown)));
    }

    #[test]
    fn simulated_pin_starts_at_rest_for_either_polarity() {
        let (low_host, _) = contact("");
        let (high_host, _) = contact(r#""active-low": false"#);

        assert_eq!(low_host.inputs.get(&PIN), Some(&Level::High));
        assert_eq!(high_host.inputs.get(&PIN), Some(&Level::Low));
    }

    #[test]
    fn create_publishes_rest_from_the_pin_and_emits_nothing() {
        let (host, _contact) = contact("");

        assert_eq!(host.state, json!({"state": "broken"}));
        assert!(host.events.is_empty());
    }

    #[test]
    fn create_with_the_input_active_publishes_active_without_event() {
        let mut host = FakeHost::with_pins(&[PIN]);
        host.inputs.insert(PIN, Level::Low);

        let _contact = Contact::create(&mut host, config("")).unwrap();

        assert_eq!(host.state_word(), Some("made"));
        assert!(host.events.is_empty());
    }

    #[test]
    fn create_fails_when_the_host_refuses_the_pin() {
        let mut host = FakeHost::with_pins(&[PIN + 1]);

        let err = Contact::create(&mut host, config("")).unwrap_err();

        assert!(err.contains("claiming GPIO 5 as an input"), "{err}");
    }

    #[test]
    fn change_is_reported_at_once() {
        let (mut host, mut contact) = contact("");

        host.edge(&mut contact, PIN, MADE).unwrap();

        assert_eq!(host.take_events(), vec!["made"]);
        assert_eq!(host.state_word(), Some("made"));
    }

    #[test]
    fn bounce_within_lockout_is_ignored() {
        let (mut host, mut contact) = contact("");
        host.edge(&mut contact, PIN, MADE).unwrap();

        host.advance(&mut contact, 5_000).unwrap();
        host.edge(&mut contact, PIN, BROKEN).unwrap();
        host.edge(&mut contact, PIN, MADE).unwrap();
        host.advance(&mut contact, LOCKOUT_US).unwrap();

        assert_eq!(host.take_events(), vec!["made"]);
        assert_eq!(host.state_word(), Some("made"));
    }

    #[test]
    fn change_back_within_lockout_is_reported_when_lockout_ends() {
        let (mut host, mut contact) = contact("");
        host.edge(&mut contact, PIN, MADE).unwrap();
        host.edge(&mut contact, PIN, BROKEN).unwrap();

        host.advance(&mut contact, LOCKOUT_US - 1).unwrap();
        let before = host.state_word().map(str::to_string);
        host.advance(&mut contact, 1).unwrap();

        assert_eq!(before.as_deref(), Some("made"));
        assert_eq!(host.take_events(), vec!["made", "broken"]);
        assert_eq!(host.state_word(), Some("broken"));
    }

    #[test]
    fn change_after_lockout_is_reported_at_once() {
        let (mut host, mut contact) = contact("");
        host.edge(&mut contact, PIN, MADE).unwrap();
        host.advance(&mut contact, LOCKOUT_US).unwrap();
        host.take_events();

        host.edge(&mut contact, PIN, BROKEN).unwrap();

        assert_eq!(host.take_events(), vec!["broken"]);
    }

    #[test]
    fn zero_debounce_reports_every_change() {
        let (mut host, mut contact) = contact(r#""debounce-ms": 0"#);

        host.edge(&mut contact, PIN, MADE).unwrap();
        host.edge(&mut contact, PIN, BROKEN).unwrap();
        host.edge(&mut contact, PIN, MADE).unwrap();

        assert_eq!(host.take_events(), vec!["made", "broken", "made"]);
    }

    #[test]
    fn active_high_input_is_active_when_pin_is_high() {
        let (mut host, mut contact) = contact(r#""pull": "down", "active-low": false"#);

        host.edge(&mut contact, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["made"]);
    }

    #[test]
    fn edge_on_another_pin_is_ignored() {
        let (mut host, mut contact) = contact("");

        host.edge(&mut contact, PIN + 1, Level::Low).unwrap();

        assert!(host.events.is_empty());
        assert_eq!(host.state_word(), Some("broken"));
    }

    #[test]
    fn timer_that_is_not_the_lockout_is_ignored() {
        let (mut host, mut contact) = contact("");
        host.inputs.insert(PIN, Level::Low);

        contact.on_timer(&mut host, DEBOUNCE_TIMER + 1).unwrap();

        assert!(host.events.is_empty());
    }

    #[test]
    fn simulate_words_give_levels_through_active_low() {
        let (_host, mut contact) = contact("");

        assert_eq!(contact.simulate("made"), Ok((PIN, Level::Low)));
        assert_eq!(contact.simulate(" Make "), Ok((PIN, Level::Low)));
        assert_eq!(contact.simulate("broken"), Ok((PIN, Level::High)));
    }

    #[test]
    fn simulate_for_active_high_gives_high_when_active() {
        let (_host, mut contact) = contact(r#""active-low": false"#);

        assert_eq!(contact.simulate("made"), Ok((PIN, Level::High)));
    }

    #[test]
    fn simulate_unknown_value_names_what_is_accepted_on_one_line() {
        let (_host, mut contact) = contact("");

        let err = contact.simulate("on").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"on\": a contact accepts made or broken"
        );
    }

    #[test]
    fn takes_no_commands() {
        let (mut host, mut contact) = contact("");

        let err = contact.command(&mut host, "on").unwrap_err();

        assert!(err.contains("a contact is an input"), "{err}");
    }

    #[test]
    fn safe_state_cancels_the_lockout() {
        let (mut host, mut contact) = contact("");
        host.edge(&mut contact, PIN, MADE).unwrap();

        contact.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
    }
}
