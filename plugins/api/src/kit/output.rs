//! An on/off output: one pin driven `on` or `off` through `active-low`, claimed at its safe
//! level so the host can restore it on a fault and at stop. [`OnOffPin`] is the building block
//! (the siren pulses one); [`OnOffOutput`] is the whole device for kinds that only switch
//! (led, relay).

use super::unknown_value;
use crate::device::{Device, Role, parse_on_off};
use crate::host::{Host, Level};
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::marker::PhantomData;

/// What an on/off output takes from `sitectl set`, as its error for an unknown value lists it.
pub const ON_OFF_ACCEPTS: &str = "on, off or toggle (also 1/0, active/inactive)";

/// Reads a command for an on/off output: the gpioset words, or `toggle` to flip `current`.
/// `a_kind` ("a relay") names the device in the error for anything else.
pub fn on_off_or_toggle(value: &str, current: bool, a_kind: &str) -> Result<bool, String> {
    if value.trim().eq_ignore_ascii_case("toggle") {
        return Ok(!current);
    }
    parse_on_off(value).ok_or_else(|| unknown_value(value, a_kind, ON_OFF_ACCEPTS))
}

/// One output pin, on or off. It records a state only once the write succeeded, so a failed
/// write leaves the device's state as it was.
#[derive(Debug)]
pub struct OnOffPin {
    pin: u32,
    active_low: bool,
    on: bool,
}

impl OnOffPin {
    /// Claims `pin` as an output. The host drives it to the level for `safe_on` now, and again
    /// whenever the device faults or the daemon stops.
    pub fn claim(
        host: &mut dyn Host,
        pin: u32,
        active_low: bool,
        safe_on: bool,
    ) -> Result<Self, String> {
        host.claim_output(pin, Level::active(safe_on, active_low))
            .map_err(|e| format!("claiming GPIO {pin} as an output: {e}"))?;
        Ok(OnOffPin {
            pin,
            active_low,
            on: safe_on,
        })
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn set(&mut self, host: &mut dyn Host, on: bool) -> Result<(), String> {
        host.write(self.pin, Level::active(on, self.active_low))
            .map_err(|e| format!("driving GPIO {}: {e}", self.pin))?;
        self.on = on;
        Ok(())
    }
}

/// Whether the output is on or off while sited starts, after a fault and at stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Safe {
    #[default]
    Off,
    On,
}

/// The config of an [`OnOffOutput`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OnOffConfig {
    pub pin: u32,
    /// For loads that are on while the pin is low: an LED wired from 3.3 V into the pin
    /// (sinking), most opto-isolated relay boards.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default)]
    pub safe: Safe,
}

/// What makes one on/off output kind. Implemented by an empty enum in each plugin, which then
/// exports `OnOffOutput<ItsKind>`.
pub trait OutputKind: 'static {
    /// The `kind = "..."` the plugin implements.
    const KIND: &'static str;
    /// How error messages name the device: "a relay", "an led".
    const A_KIND: &'static str;
    /// One line for the daemon log ("relay: a lock, light or fan").
    const DESCRIPTION: &'static str = "";
}

/// A device that is one on/off output: `sitectl set` and site logic switch it, `toggle`
/// flips it, and its state is `{"state": "on"}` or `{"state": "off"}`. It starts, faults and
/// stops at its `safe` level.
pub struct OnOffOutput<K> {
    output: OnOffPin,
    safe_on: bool,
    kind: PhantomData<fn() -> K>,
}

impl<K: OutputKind> fmt::Debug for OnOffOutput<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(K::KIND)
            .field("output", &self.output)
            .field("safe_on", &self.safe_on)
            .finish()
    }
}

impl<K: OutputKind> OnOffOutput<K> {
    fn publish(&self, host: &mut dyn Host) {
        let word = if self.output.is_on() { "on" } else { "off" };
        host.set_state(&json!({ "state": word }));
    }

    fn drive(&mut self, host: &mut dyn Host, on: bool) -> Result<(), String> {
        self.output.set(host, on)?;
        self.publish(host);
        Ok(())
    }
}

impl<K: OutputKind> Device for OnOffOutput<K> {
    const KIND: &'static str = K::KIND;
    const ROLE: Role = Role::Output;
    const DESCRIPTION: &'static str = K::DESCRIPTION;
    type Config = OnOffConfig;

    fn create(host: &mut dyn Host, config: OnOffConfig) -> Result<Self, String> {
        let safe_on = config.safe == Safe::On;
        let device = OnOffOutput {
            output: OnOffPin::claim(host, config.pin, config.active_low, safe_on)?,
            safe_on,
            kind: PhantomData,
        };
        device.publish(host);
        Ok(device)
    }

    fn command(&mut self, host: &mut dyn Host, value: &str) -> Result<(), String> {
        let on = on_off_or_toggle(value, self.output.is_on(), K::A_KIND)?;
        self.drive(host, on)
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.drive(host, self.safe_on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::parse_config;
    use crate::fake::{Claim, FakeHost, config_json};

    const PIN: u32 = 17;

    /// A kind that exists only for these tests, so they hold for every on/off output.
    enum LampKind {}

    impl OutputKind for LampKind {
        const KIND: &'static str = "lamp";
        const A_KIND: &'static str = "a lamp";
    }

    type Lamp = OnOffOutput<LampKind>;

    fn config(keys: &str) -> OnOffConfig {
        parse_config(&config_json(PIN, keys)).unwrap()
    }

    fn lamp(keys: &str) -> (FakeHost, Lamp) {
        FakeHost::with_device(PIN, keys).unwrap()
    }

    #[test]
    fn defaults_are_active_high_and_safe_off() {
        assert_eq!(
            config(""),
            OnOffConfig {
                pin: PIN,
                active_low: false,
                safe: Safe::Off,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<OnOffConfig>(r#"{"pin": 17, "pull": "up"}"#).unwrap_err();

        assert!(err.contains("pull"), "{err}");
    }

    #[test]
    fn unknown_safe_word_is_rejected() {
        let err = parse_config::<OnOffConfig>(r#"{"pin": 17, "safe": "lit"}"#).unwrap_err();

        assert!(err.contains("lit"), "{err}");
    }

    #[test]
    fn create_claims_output_low_and_publishes_off() {
        let (host, _lamp) = lamp("");

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::Low })
        );
        assert_eq!(host.state, json!({"state": "off"}));
    }

    #[test]
    fn safe_on_starts_on() {
        let (host, _lamp) = lamp(r#""safe": "on""#);

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn active_low_claims_high_as_safe_off() {
        let (host, _lamp) = lamp(r#""active-low": true"#);

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::High })
        );
    }

    #[test]
    fn create_fails_when_the_host_refuses_the_pin() {
        let mut host = FakeHost::with_pins(&[PIN + 1]);

        let err = Lamp::create(&mut host, config("")).unwrap_err();

        assert!(err.contains("GPIO 17"), "{err}");
    }

    #[test]
    fn on_drives_high_and_publishes_on() {
        let (mut host, mut lamp) = lamp("");

        lamp.command(&mut host, "on").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn off_drives_low_and_publishes_off() {
        let (mut host, mut lamp) = lamp("");
        lamp.command(&mut host, "on").unwrap();

        lamp.command(&mut host, "0").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn active_low_drives_low_when_on() {
        let (mut host, mut lamp) = lamp(r#""active-low": true"#);

        lamp.command(&mut host, "active").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
    }

    #[test]
    fn active_low_drives_high_when_off() {
        let (mut host, mut lamp) = lamp(r#""active-low": true"#);
        lamp.command(&mut host, "on").unwrap();

        lamp.command(&mut host, "off").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
    }

    #[test]
    fn toggle_flips_the_state() {
        let (mut host, mut lamp) = lamp("");

        lamp.command(&mut host, "toggle").unwrap();
        let first = host.state_word().map(str::to_string);
        lamp.command(&mut host, " Toggle ").unwrap();

        assert_eq!(first.as_deref(), Some("on"));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn unknown_command_names_the_kind_and_what_is_accepted_and_changes_nothing() {
        let (mut host, mut lamp) = lamp("");

        let err = lamp.command(&mut host, "blink").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"blink\": a lamp accepts on, off or toggle (also 1/0, active/inactive)"
        );
        assert!(host.writes.is_empty());
    }

    #[test]
    fn failed_write_is_an_error_and_keeps_the_state() {
        let (mut host, mut lamp) = lamp("");
        host.fail_hardware = true;

        let err = lamp.command(&mut host, "on").unwrap_err();

        assert!(err.contains("GPIO 17"), "{err}");
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn toggle_after_a_failed_write_flips_the_last_driven_state() {
        let (mut host, mut lamp) = lamp("");
        host.fail_hardware = true;
        let _ = lamp.command(&mut host, "on");

        lamp.command(&mut host, "toggle").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
    }

    #[test]
    fn safe_state_returns_to_safe_level() {
        let (mut host, mut lamp) = lamp("");
        lamp.command(&mut host, "on").unwrap();

        lamp.safe_state(&mut host).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn safe_on_with_active_low_returns_low_on_safe_state() {
        let (mut host, mut lamp) = lamp(r#""active-low": true, "safe": "on""#);
        lamp.command(&mut host, "off").unwrap();

        lamp.safe_state(&mut host).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn rejects_simulate_naming_the_kind() {
        let (_host, mut lamp) = lamp("");

        let err = lamp.simulate("on").unwrap_err();

        assert!(err.contains("a lamp is an output"), "{err}");
    }

    #[test]
    fn on_off_or_toggle_takes_gpioset_words_and_toggle() {
        assert_eq!(on_off_or_toggle("ON", false, "a lamp"), Ok(true));
        assert_eq!(on_off_or_toggle("inactive", true, "a lamp"), Ok(false));
        assert_eq!(on_off_or_toggle("toggle", true, "a lamp"), Ok(false));
    }
}
