//! The `reed` device kind: a door's reed switch on one input pin, reported as `open`/`closed`.
//! Wired to ground against the pull-up, the magnet closes the contact while the door is shut,
//! so shut reads low (`closed`) and open reads high (`open`).

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Bias, Debouncer, Device, Host, Level, Role};

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
    /// Active means open. With the usual wiring (contact closed to ground while the door is
    /// shut) an open door reads high, so the default is active-high.
    #[serde(default)]
    pub active_low: bool,
    /// Longer than a button's: a door rattling in its frame bounces for tens of milliseconds.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_pull() -> Pull {
    Pull::Up
}

fn default_debounce_ms() -> u64 {
    50
}

#[derive(Debug)]
pub struct Reed {
    pin: u32,
    active_low: bool,
    debouncer: Debouncer,
}

impl Reed {
    fn open(&self) -> bool {
        self.debouncer.level().is_high() != self.active_low
    }

    fn word(&self) -> &'static str {
        if self.open() { "open" } else { "closed" }
    }

    fn publish(&self, host: &mut dyn Host) {
        host.set_state(&json!({ "state": self.word() }));
    }

    fn changed(&self, host: &mut dyn Host) {
        host.emit(self.word());
        self.publish(host);
    }
}

impl Device for Reed {
    const KIND: &'static str = "reed";
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
        host.claim_input(
            config.pin,
            config.pull.into(),
            Level::active(false, config.active_low),
        )
        .map_err(|e| format!("claiming GPIO {} as an input: {e}", config.pin))?;
        let level = host
            .read(config.pin)
            .map_err(|e| format!("reading GPIO {}: {e}", config.pin))?;
        let reed = Reed {
            pin: config.pin,
            active_low: config.active_low,
            debouncer: Debouncer::new(config.pin, DEBOUNCE_TIMER, config.debounce_ms, level),
        };
        reed.publish(host);
        Ok(reed)
    }

    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        pin: u32,
        level: Level,
        _at_us: u64,
    ) -> Result<(), String> {
        // The host delivers only our own pin; anything else is its bug, not a door opening.
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
        // No on/off words: "on" says nothing about whether a door is open.
        let open = match value.trim().to_ascii_lowercase().as_str() {
            "open" => true,
            "closed" | "close" => false,
            _ => {
                return Err(format!(
                    "unknown value \"{value}\": a reed accepts open or closed"
                ));
            }
        };
        Ok((self.pin, Level::active(open, self.active_low)))
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        self.debouncer.cancel(host);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Reed);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};

    const PIN: u32 = 16;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    /// A reed whose door starts shut (pin low).
    fn shut_reed(extra: &str) -> (FakeHost, Reed) {
        let config = config(extra);
        Reed::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        host.inputs.insert(PIN, Level::Low);
        let reed = Reed::create(&mut host, config).unwrap();
        (host, reed)
    }

    #[test]
    fn defaults_are_pull_up_active_high_50ms() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                pull: Pull::Up,
                active_low: false,
                debounce_ms: 50,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 16, "hold-ms": 10}"#).unwrap_err();

        assert!(err.contains("hold-ms"), "{err}");
    }

    #[test]
    fn debounce_above_limit_is_rejected_naming_the_key() {
        let err = Reed::check(&config(r#""debounce-ms": 2000"#)).unwrap_err();

        assert!(err.contains("debounce-ms"), "{err}");
    }

    #[test]
    fn create_claims_input_with_pull_up() {
        let (host, _reed) = shut_reed("");

        assert_eq!(host.claims.get(&PIN), Some(&Claim::Input(Bias::PullUp)));
    }

    #[test]
    fn shut_door_reads_low_and_is_closed_at_create_without_event() {
        let (host, _reed) = shut_reed("");

        assert_eq!(host.state, json!({"state": "closed"}));
        assert!(host.events.is_empty());
    }

    #[test]
    fn pin_reading_high_at_create_is_open() {
        let mut host = FakeHost::with_pins(&[PIN]);
        host.inputs.insert(PIN, Level::High);

        let _reed = Reed::create(&mut host, config("")).unwrap();

        assert_eq!(host.state_word(), Some("open"));
    }

    #[test]
    fn door_opening_is_reported_at_once() {
        let (mut host, mut reed) = shut_reed("");

        host.edge(&mut reed, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["open"]);
        assert_eq!(host.state_word(), Some("open"));
    }

    #[test]
    fn bounce_within_lockout_is_ignored() {
        let (mut host, mut reed) = shut_reed("");
        host.edge(&mut reed, PIN, Level::High).unwrap();

        host.advance(&mut reed, 10_000).unwrap();
        host.edge(&mut reed, PIN, Level::Low).unwrap();
        host.edge(&mut reed, PIN, Level::High).unwrap();
        host.advance(&mut reed, 50_000).unwrap();

        assert_eq!(host.take_events(), vec!["open"]);
        assert_eq!(host.state_word(), Some("open"));
    }

    #[test]
    fn close_within_lockout_is_reported_when_lockout_ends() {
        let (mut host, mut reed) = shut_reed("");
        host.edge(&mut reed, PIN, Level::High).unwrap();
        host.edge(&mut reed, PIN, Level::Low).unwrap();

        host.advance(&mut reed, 49_999).unwrap();
        let before = host.state_word().map(str::to_string);
        host.advance(&mut reed, 1).unwrap();

        assert_eq!(before.as_deref(), Some("open"));
        assert_eq!(host.take_events(), vec!["open", "closed"]);
        assert_eq!(host.state_word(), Some("closed"));
    }

    #[test]
    fn active_low_reed_is_open_when_pin_is_low() {
        let mut host = FakeHost::with_pins(&[PIN]);
        let mut reed = Reed::create(&mut host, config(r#""active-low": true"#)).unwrap();

        host.edge(&mut reed, PIN, Level::Low).unwrap();

        assert_eq!(host.take_events(), vec!["open"]);
    }

    #[test]
    fn simulate_open_and_closed_give_high_and_low() {
        let (_host, mut reed) = shut_reed("");

        assert_eq!(reed.simulate("open"), Ok((PIN, Level::High)));
        assert_eq!(reed.simulate("closed"), Ok((PIN, Level::Low)));
        assert_eq!(reed.simulate("close"), Ok((PIN, Level::Low)));
    }

    #[test]
    fn simulate_unknown_value_names_what_is_accepted() {
        let (_host, mut reed) = shut_reed("");

        let err = reed.simulate("on").unwrap_err();

        assert!(err.contains("open or closed"), "{err}");
    }

    #[test]
    fn safe_state_cancels_the_lockout() {
        let (mut host, mut reed) = shut_reed("");
        host.edge(&mut reed, PIN, Level::High).unwrap();

        reed.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
    }
}
