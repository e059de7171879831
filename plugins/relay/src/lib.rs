//! The `relay` device kind: a relay (lock, light, fan) on one output pin, driven `on`/`off` by
//! site logic and `sitectl set`. It starts, faults and stops at its `safe` level, so a lock can
//! be made fail-open by leaving `safe = "off"`.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Device, Host, Level, Role, parse_on_off};

/// Whether the output is on or off while sited starts, after a fault and at stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Safe {
    Off,
    On,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    /// Many relay boards (most opto-isolated modules) are active-low: IN low = relay on.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_safe")]
    pub safe: Safe,
}

fn default_safe() -> Safe {
    Safe::Off
}

#[derive(Debug)]
pub struct Relay {
    pin: u32,
    active_low: bool,
    safe_on: bool,
    on: bool,
}

impl Relay {
    fn publish(&self, host: &mut dyn Host) {
        host.set_state(&json!({ "state": if self.on { "on" } else { "off" } }));
    }

    fn drive(&mut self, host: &mut dyn Host, on: bool) -> Result<(), String> {
        host.write(self.pin, Level::active(on, self.active_low))
            .map_err(|e| format!("driving GPIO {}: {e}", self.pin))?;
        self.on = on;
        self.publish(host);
        Ok(())
    }
}

impl Device for Relay {
    const KIND: &'static str = "relay";
    const ROLE: Role = Role::Output;
    type Config = Config;

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        let safe_on = config.safe == Safe::On;
        host.claim_output(config.pin, Level::active(safe_on, config.active_low))
            .map_err(|e| format!("claiming GPIO {} as an output: {e}", config.pin))?;
        let relay = Relay {
            pin: config.pin,
            active_low: config.active_low,
            safe_on,
            on: safe_on,
        };
        relay.publish(host);
        Ok(relay)
    }

    fn command(&mut self, host: &mut dyn Host, value: &str) -> Result<(), String> {
        let on = if value.trim().eq_ignore_ascii_case("toggle") {
            !self.on
        } else {
            parse_on_off(value).ok_or_else(|| {
                format!(
                    "unknown value \"{value}\": a relay accepts on, off or toggle (also 1/0, active/inactive)"
                )
            })?
        };
        self.drive(host, on)
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.drive(host, self.safe_on)
    }
}

site_plugin_api::export_plugin!(Relay);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};

    const PIN: u32 = 23;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    fn relay(extra: &str) -> (FakeHost, Relay) {
        let config = config(extra);
        Relay::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        let relay = Relay::create(&mut host, config).unwrap();
        (host, relay)
    }

    #[test]
    fn defaults_are_active_high_and_safe_off() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                active_low: false,
                safe: Safe::Off,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 23, "pull": "up"}"#).unwrap_err();

        assert!(err.contains("pull"), "{err}");
    }

    #[test]
    fn unknown_safe_word_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 23, "safe": "closed"}"#).unwrap_err();

        assert!(err.contains("closed"), "{err}");
    }

    #[test]
    fn create_claims_output_low_and_publishes_off() {
        let (host, _relay) = relay("");

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::Low })
        );
        assert_eq!(host.state, json!({"state": "off"}));
    }

    #[test]
    fn safe_on_starts_energised() {
        let (host, _relay) = relay(r#""safe": "on""#);

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn create_fails_when_the_host_refuses_the_pin() {
        let mut host = FakeHost::with_pins(&[PIN + 1]);

        let err = Relay::create(&mut host, config("")).unwrap_err();

        assert!(err.contains("GPIO 23"), "{err}");
    }

    #[test]
    fn on_drives_high_and_publishes_on() {
        let (mut host, mut relay) = relay("");

        relay.command(&mut host, "on").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn off_drives_low_and_publishes_off() {
        let (mut host, mut relay) = relay("");
        relay.command(&mut host, "on").unwrap();

        relay.command(&mut host, "0").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn relay_active_low_drives_low_when_on() {
        let (mut host, mut relay) = relay(r#""active-low": true"#);

        relay.command(&mut host, "active").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
    }

    #[test]
    fn relay_active_low_drives_high_when_off() {
        let (mut host, mut relay) = relay(r#""active-low": true"#);
        relay.command(&mut host, "on").unwrap();

        relay.command(&mut host, "off").unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::High));
    }

    #[test]
    fn relay_active_low_claims_high_as_safe_off() {
        let (host, _relay) = relay(r#""active-low": true"#);

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Output { safe: Level::High })
        );
    }

    #[test]
    fn safe_on_with_active_low_returns_low_on_safe_state() {
        let (mut host, mut relay) = relay(r#""active-low": true, "safe": "on""#);
        relay.command(&mut host, "off").unwrap();

        relay.safe_state(&mut host).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("on"));
    }

    #[test]
    fn toggle_flips_the_state() {
        let (mut host, mut relay) = relay("");

        relay.command(&mut host, "toggle").unwrap();
        let first = host.state_word().map(str::to_string);
        relay.command(&mut host, "toggle").unwrap();

        assert_eq!(first.as_deref(), Some("on"));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn unknown_command_names_what_is_accepted_and_changes_nothing() {
        let (mut host, mut relay) = relay("");

        let err = relay.command(&mut host, "latch").unwrap_err();

        assert!(err.contains("on, off or toggle"), "{err}");
        assert!(host.writes.is_empty());
    }

    #[test]
    fn failed_write_is_an_error_and_keeps_the_state() {
        let (mut host, mut relay) = relay("");
        host.fail_hardware = true;

        let err = relay.command(&mut host, "on").unwrap_err();

        assert!(err.contains("GPIO 23"), "{err}");
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn safe_state_returns_to_safe_level() {
        let (mut host, mut relay) = relay("");
        relay.command(&mut host, "on").unwrap();

        relay.safe_state(&mut host).unwrap();

        assert_eq!(host.outputs.get(&PIN), Some(&Level::Low));
        assert_eq!(host.state_word(), Some("off"));
    }

    #[test]
    fn relay_rejects_simulate() {
        let (_host, mut relay) = relay("");

        assert!(relay.simulate("on").is_err());
    }
}
