//! The `faulty` device kind exists only for the end-to-end tests of fault containment: on
//! request it panics or fails in create, an edge, a command or a timer, or tries to claim
//! another device's pin. It is not installed on real sites.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Bias, Device, Host, Level, Role, parse_on_off};

const EDGE_TIMER: u64 = 1;
const EDGE_TIMER_US: u64 = 1000;

/// Where to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Never,
    Create,
    Edge,
    Command,
    Timer,
}

impl Stage {
    fn word(self) -> &'static str {
        match self {
            Stage::Never => "never",
            Stage::Create => "create",
            Stage::Edge => "edge",
            Stage::Command => "command",
            Stage::Timer => "timer",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    #[serde(default = "never")]
    pub panic_in: Stage,
    /// Like `panic-in`, but returns an error instead.
    #[serde(default = "never")]
    pub fail_in: Stage,
    /// A pin this device has no right to: create tries to claim it as an output.
    #[serde(default)]
    pub steal_pin: Option<u32>,
}

fn never() -> Stage {
    Stage::Never
}

#[derive(Debug)]
pub struct Faulty {
    pin: u32,
    panic_in: Stage,
    fail_in: Stage,
    /// Whether the host let us claim `steal-pin`; the tests read it from the state.
    stole: bool,
}

impl Faulty {
    fn misbehave(&self, stage: Stage) -> Result<(), String> {
        if self.panic_in == stage {
            panic!("faulty: panic-in = \"{}\"", stage.word());
        }
        if self.fail_in == stage {
            return Err(format!("faulty: fail-in = \"{}\"", stage.word()));
        }
        Ok(())
    }

    fn publish(&self, host: &mut dyn Host, word: &str) {
        host.set_state(&json!({ "state": word, "stole": self.stole }));
    }
}

impl Device for Faulty {
    const KIND: &'static str = "faulty";
    const ROLE: Role = Role::Input;
    const DESCRIPTION: &'static str = "fails on purpose, for tests";
    type Config = Config;

    fn check(config: &Config) -> Result<(), String> {
        if config.panic_in != Stage::Never && config.panic_in == config.fail_in {
            return Err(format!(
                "panic-in and fail-in both name \"{}\": pick one",
                config.panic_in.word()
            ));
        }
        if config.steal_pin == Some(config.pin) {
            return Err("steal-pin must name another device's pin, not this one's".to_string());
        }
        Ok(())
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        // Pulled down so the pin idles low and `sitectl sim <name> high` makes an edge.
        host.claim_input(config.pin, Bias::PullDown, Level::Low)
            .map_err(|e| format!("claiming GPIO {} as an input: {e}", config.pin))?;
        let stole = match config.steal_pin {
            Some(pin) => host.claim_output(pin, Level::Low).is_ok(),
            None => false,
        };
        let faulty = Faulty {
            pin: config.pin,
            panic_in: config.panic_in,
            fail_in: config.fail_in,
            stole,
        };
        // After the claims, so the host must also give back the pins of a device whose create
        // failed.
        faulty.misbehave(Stage::Create)?;
        faulty.publish(host, "idle");
        Ok(faulty)
    }

    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        _pin: u32,
        _level: Level,
        _at_us: u64,
    ) -> Result<(), String> {
        self.misbehave(Stage::Edge)?;
        host.arm_timer(EDGE_TIMER, EDGE_TIMER_US)
            .map_err(|e| format!("arming the timer: {e}"))?;
        host.emit("edge");
        self.publish(host, "seen");
        Ok(())
    }

    fn on_timer(&mut self, _host: &mut dyn Host, _id: u64) -> Result<(), String> {
        self.misbehave(Stage::Timer)
    }

    fn command(&mut self, _host: &mut dyn Host, _value: &str) -> Result<(), String> {
        self.misbehave(Stage::Command)
    }

    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        let high = parse_on_off(value).ok_or_else(|| {
            format!("unknown value \"{value}\": a faulty device accepts high or low")
        })?;
        Ok((self.pin, Level::from_bool(high)))
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        host.cancel_timer(EDGE_TIMER);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Faulty);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};
    use std::panic::{AssertUnwindSafe, catch_unwind};

    const PIN: u32 = 9;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    fn faulty(extra: &str) -> (FakeHost, Faulty) {
        let config = config(extra);
        Faulty::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        let faulty = Faulty::create(&mut host, config).unwrap();
        (host, faulty)
    }

    fn panics(f: impl FnOnce()) -> bool {
        catch_unwind(AssertUnwindSafe(f)).is_err()
    }

    #[test]
    fn defaults_never_misbehave() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                panic_in: Stage::Never,
                fail_in: Stage::Never,
                steal_pin: None,
            }
        );
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 9, "explode": true}"#).unwrap_err();

        assert!(err.contains("explode"), "{err}");
    }

    #[test]
    fn unknown_stage_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 9, "panic-in": "always"}"#).unwrap_err();

        assert!(err.contains("always"), "{err}");
    }

    #[test]
    fn panic_and_fail_in_the_same_stage_is_rejected() {
        let err = Faulty::check(&config(r#""panic-in": "edge", "fail-in": "edge""#)).unwrap_err();

        assert!(err.contains("panic-in and fail-in"), "{err}");
    }

    #[test]
    fn stealing_its_own_pin_is_rejected() {
        let err = Faulty::check(&config(r#""steal-pin": 9"#)).unwrap_err();

        assert!(err.contains("steal-pin"), "{err}");
    }

    #[test]
    fn create_claims_input_pulled_down_and_publishes_idle() {
        let (host, _faulty) = faulty("");

        assert_eq!(host.claims.get(&PIN), Some(&Claim::Input(Bias::PullDown)));
        assert_eq!(host.state, json!({"state": "idle", "stole": false}));
    }

    #[test]
    fn panic_in_create_panics() {
        let mut host = FakeHost::with_pins(&[PIN]);
        let config = config(r#""panic-in": "create""#);

        assert!(panics(|| {
            let _ = Faulty::create(&mut host, config);
        }));
    }

    #[test]
    fn fail_in_create_is_an_error_after_claiming() {
        let mut host = FakeHost::with_pins(&[PIN]);

        let err = Faulty::create(&mut host, config(r#""fail-in": "create""#)).unwrap_err();

        assert!(err.contains("fail-in"), "{err}");
        assert!(host.claims.contains_key(&PIN));
    }

    #[test]
    fn refused_steal_is_recorded_as_not_stolen() {
        let (host, _faulty) = faulty(r#""steal-pin": 24"#);

        assert_eq!(host.state["stole"], false);
        assert!(!host.claims.contains_key(&24));
    }

    #[test]
    fn allowed_steal_is_recorded_as_stolen() {
        let mut host = FakeHost::with_pins(&[PIN, 24]);

        let _faulty = Faulty::create(&mut host, config(r#""steal-pin": 24"#)).unwrap();

        assert_eq!(host.state["stole"], true);
    }

    #[test]
    fn edge_emits_edge_and_arms_a_1ms_timer() {
        let (mut host, mut faulty) = faulty("");

        host.edge(&mut faulty, PIN, Level::High).unwrap();

        assert_eq!(host.take_events(), vec!["edge"]);
        assert_eq!(host.state_word(), Some("seen"));
        assert_eq!(host.timers.get(&EDGE_TIMER), Some(&1000));
    }

    #[test]
    fn panic_in_edge_panics() {
        let (mut host, mut faulty) = faulty(r#""panic-in": "edge""#);

        assert!(panics(|| {
            let _ = host.edge(&mut faulty, PIN, Level::High);
        }));
    }

    #[test]
    fn fail_in_edge_is_an_error() {
        let (mut host, mut faulty) = faulty(r#""fail-in": "edge""#);

        assert!(host.edge(&mut faulty, PIN, Level::High).is_err());
    }

    #[test]
    fn panic_in_timer_panics_when_the_edge_timer_fires() {
        let (mut host, mut faulty) = faulty(r#""panic-in": "timer""#);
        host.edge(&mut faulty, PIN, Level::High).unwrap();

        assert!(panics(|| {
            let _ = host.advance(&mut faulty, EDGE_TIMER_US);
        }));
    }

    #[test]
    fn fail_in_timer_is_an_error_when_the_edge_timer_fires() {
        let (mut host, mut faulty) = faulty(r#""fail-in": "timer""#);
        host.edge(&mut faulty, PIN, Level::High).unwrap();

        assert!(host.advance(&mut faulty, EDGE_TIMER_US).is_err());
    }

    #[test]
    fn timer_without_misbehaviour_is_fine() {
        let (mut host, mut faulty) = faulty("");
        host.edge(&mut faulty, PIN, Level::High).unwrap();

        assert_eq!(host.advance(&mut faulty, EDGE_TIMER_US), Ok(()));
        assert!(host.timers.is_empty());
    }

    #[test]
    fn any_command_is_accepted_by_default() {
        let (mut host, mut faulty) = faulty("");

        assert_eq!(faulty.command(&mut host, "whatever"), Ok(()));
    }

    #[test]
    fn panic_in_command_panics() {
        let (mut host, mut faulty) = faulty(r#""panic-in": "command""#);

        assert!(panics(|| {
            let _ = faulty.command(&mut host, "on");
        }));
    }

    #[test]
    fn fail_in_command_is_an_error() {
        let (mut host, mut faulty) = faulty(r#""fail-in": "command""#);

        assert!(faulty.command(&mut host, "on").is_err());
    }

    #[test]
    fn simulate_gives_the_level_asked_for() {
        let (_host, mut faulty) = faulty("");

        assert_eq!(faulty.simulate("high"), Ok((PIN, Level::High)));
        assert_eq!(faulty.simulate("low"), Ok((PIN, Level::Low)));
        assert!(faulty.simulate("sideways").is_err());
    }

    #[test]
    fn safe_state_cancels_the_edge_timer() {
        let (mut host, mut faulty) = faulty("");
        host.edge(&mut faulty, PIN, Level::High).unwrap();

        faulty.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
    }
}
