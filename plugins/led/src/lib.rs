//! The `led` device kind: an indicator LED on one output pin, driven `on`/`off` by site logic
//! and `sitectl set`. It starts, faults and stops at its `safe` level. An LED wired from 3.3 V
//! into the pin (sinking) lights when the pin is low: set `active-low`.
//!
//! All of it is the kit's on/off output; this crate gives it its name.

use site_plugin_api::kit::{OnOffOutput, OutputKind};

pub enum LedKind {}

impl OutputKind for LedKind {
    const KIND: &'static str = "led";
    const A_KIND: &'static str = "an led";
    const DESCRIPTION: &'static str = "LED, on or off";
}

pub type Led = OnOffOutput<LedKind>;

pub type Config = site_plugin_api::kit::OnOffConfig;

site_plugin_api::export_plugin!(Led);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::kit::Safe;
    use site_plugin_api::{Device, FakeHost, Level, parse_config};

    const PIN: u32 = 17;

    #[test]
    fn defaults_are_active_high_and_safe_off() {
        let config: Config = parse_config(r#"{"pin": 17}"#).unwrap();

        assert_eq!((config.active_low, config.safe), (false, Safe::Off));
    }

    #[test]
    fn led_starts_dark_with_the_pin_low() {
        let mut host = FakeHost::with_pins(&[PIN]);

        let _led: Led = host.create(r#"{"pin": 17}"#).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn sinking_led_lights_with_the_pin_low() {
        let mut host = FakeHost::with_pins(&[PIN]);
        let mut led: Led = host.create(r#"{"pin": 17, "active-low": true}"#).unwrap();

        led.command(&mut host, "on").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn unknown_command_names_an_led_and_what_it_accepts() {
        let mut host = FakeHost::with_pins(&[PIN]);
        let mut led: Led = host.create(r#"{"pin": 17}"#).unwrap();

        let err = led.command(&mut host, "blink").unwrap_err();

        assert_eq!(
            err,
            "unknown value \"blink\": an led accepts on, off or toggle (also 1/0, active/inactive)"
        );
    }

    #[test]
    fn kind_is_led_and_it_rejects_simulate() {
        let mut host = FakeHost::with_pins(&[PIN]);
        let mut led: Led = host.create(r#"{"pin": 17}"#).unwrap();

        assert_eq!(Led::KIND, "led");
        assert!(led.simulate("on").is_err());
    }
}
