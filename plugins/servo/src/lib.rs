//! The `servo` device kind: a door servo on one PWM pin, moved to `open`, `closed` or an angle.
//! Unless `hold` is set it stops pulsing `move-ms` after each move, so an idle servo neither
//! buzzes nor heats; its safe state is the closed position, which the host also restores.

use serde::Deserialize;
use serde_json::json;
use site_plugin_api::{Device, Host, PwmSpec, Role};

const STOP_TIMER: u64 = 1;
const MAX_ANGLE: f64 = 180.0;
const MIN_PULSE_US: u64 = 100;
const MAX_PULSE_US: u64 = 3000;
const MIN_PERIOD_US: u64 = 5000;
const MAX_PERIOD_US: u64 = 50_000;
const MIN_MOVE_MS: u64 = 10;
const MAX_MOVE_MS: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub pin: u32,
    /// Unset: the backend picks the chip for the pin, or falls back to software PWM.
    #[serde(default)]
    pub pwm_chip: Option<u32>,
    #[serde(default)]
    pub pwm_channel: Option<u32>,
    /// 20 ms (50 Hz) is what hobby servos expect.
    #[serde(default = "default_period_us")]
    pub period_us: u64,
    /// The pulse for 0 degrees.
    #[serde(default = "default_min_pulse_us")]
    pub min_pulse_us: u64,
    /// The pulse for 180 degrees.
    #[serde(default = "default_max_pulse_us")]
    pub max_pulse_us: u64,
    #[serde(default = "default_open_angle")]
    pub open_angle: f64,
    #[serde(default)]
    pub closed_angle: f64,
    /// How long the servo needs to reach a new position before pulsing can stop.
    #[serde(default = "default_move_ms")]
    pub move_ms: u64,
    /// Keep pulsing after a move, for a door that must be held against a load.
    #[serde(default)]
    pub hold: bool,
}

fn default_period_us() -> u64 {
    20_000
}

fn default_min_pulse_us() -> u64 {
    500
}

fn default_max_pulse_us() -> u64 {
    2500
}

fn default_open_angle() -> f64 {
    90.0
}

fn default_move_ms() -> u64 {
    600
}

fn check_angle(key: &str, angle: f64) -> Result<(), String> {
    if (0.0..=MAX_ANGLE).contains(&angle) {
        Ok(())
    } else {
        Err(format!("{key} must be 0..=180 degrees (got {angle})"))
    }
}

/// The pulse for `angle` degrees, linear between the config's min and max pulses.
fn pulse_ns(config: &Config, angle: f64) -> u64 {
    let span_us = config.max_pulse_us.saturating_sub(config.min_pulse_us) as f64;
    let pulse_us = config.min_pulse_us as f64 + span_us * angle / MAX_ANGLE;
    (pulse_us * 1000.0).round() as u64
}

#[derive(Debug)]
pub struct Servo {
    pin: u32,
    config: Config,
    angle: f64,
    pulsing: bool,
}

impl Servo {
    fn publish(&self, host: &mut dyn Host) {
        let word = if self.angle == self.config.open_angle {
            "open"
        } else if self.angle == self.config.closed_angle {
            "closed"
        } else {
            "moved"
        };
        host.set_state(&json!({ "state": word, "angle": self.angle, "pulsing": self.pulsing }));
    }

    fn arm_stop(&mut self, host: &mut dyn Host) -> Result<(), String> {
        if self.config.hold {
            return Ok(());
        }
        host.arm_timer(STOP_TIMER, self.config.move_ms.saturating_mul(1000))
            .map_err(|e| format!("arming the stop timer: {e}"))
    }

    fn move_to(&mut self, host: &mut dyn Host, angle: f64) -> Result<(), String> {
        host.set_pwm(self.pin, pulse_ns(&self.config, angle))
            .map_err(|e| format!("setting the pulse on GPIO {}: {e}", self.pin))?;
        self.angle = angle;
        self.pulsing = true;
        self.arm_stop(host)?;
        self.publish(host);
        Ok(())
    }

    fn parse_target(&self, value: &str) -> Result<f64, String> {
        let word = value.trim().to_ascii_lowercase();
        match word.as_str() {
            "open" => return Ok(self.config.open_angle),
            "closed" | "close" => return Ok(self.config.closed_angle),
            _ => {}
        }
        // f64 parsing also takes "inf" and "NaN"; the range check turns those away.
        match word.parse::<f64>() {
            Ok(angle) if (0.0..=MAX_ANGLE).contains(&angle) => Ok(angle),
            Ok(_) => Err(format!(
                "angle {} is out of range: a servo takes 0..=180 degrees",
                value.trim()
            )),
            Err(_) => Err(format!(
                "unknown value \"{value}\": a servo accepts open, closed or an angle in degrees (0..=180)"
            )),
        }
    }
}

impl Device for Servo {
    const KIND: &'static str = "servo";
    const ROLE: Role = Role::Output;
    const DESCRIPTION: &'static str = "door servo, open or closed by angle";
    type Config = Config;

    fn check(c: &Config) -> Result<(), String> {
        check_angle("open-angle", c.open_angle)?;
        check_angle("closed-angle", c.closed_angle)?;
        if c.open_angle == c.closed_angle {
            return Err(format!(
                "open-angle and closed-angle are both {}: the door would never move",
                c.open_angle
            ));
        }
        if !(MIN_PERIOD_US..=MAX_PERIOD_US).contains(&c.period_us) {
            return Err(format!(
                "period-us must be {MIN_PERIOD_US}..={MAX_PERIOD_US} (got {})",
                c.period_us
            ));
        }
        if c.min_pulse_us < MIN_PULSE_US {
            return Err(format!(
                "min-pulse-us must be at least {MIN_PULSE_US} (got {})",
                c.min_pulse_us
            ));
        }
        if c.min_pulse_us >= c.max_pulse_us {
            return Err(format!(
                "min-pulse-us ({}) must be less than max-pulse-us ({})",
                c.min_pulse_us, c.max_pulse_us
            ));
        }
        if c.max_pulse_us >= c.period_us {
            return Err(format!(
                "max-pulse-us ({}) must be less than period-us ({})",
                c.max_pulse_us, c.period_us
            ));
        }
        if c.max_pulse_us > MAX_PULSE_US {
            return Err(format!(
                "max-pulse-us must be at most {MAX_PULSE_US} (got {})",
                c.max_pulse_us
            ));
        }
        if !(MIN_MOVE_MS..=MAX_MOVE_MS).contains(&c.move_ms) {
            return Err(format!(
                "move-ms must be {MIN_MOVE_MS}..={MAX_MOVE_MS} (got {})",
                c.move_ms
            ));
        }
        Ok(())
    }

    fn create(host: &mut dyn Host, config: Config) -> Result<Self, String> {
        let spec = PwmSpec {
            chip: config.pwm_chip,
            channel: config.pwm_channel,
            period_ns: config.period_us.saturating_mul(1000),
            safe_pulse_ns: pulse_ns(&config, config.closed_angle),
        };
        // The host starts the pulse at `safe_pulse_ns`: the door is driven closed from here on.
        host.claim_pwm(config.pin, spec)
            .map_err(|e| format!("claiming GPIO {} for PWM: {e}", config.pin))?;
        let mut servo = Servo {
            pin: config.pin,
            angle: config.closed_angle,
            pulsing: true,
            config,
        };
        servo.arm_stop(host)?;
        servo.publish(host);
        Ok(servo)
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        if id != STOP_TIMER || !self.pulsing {
            return Ok(());
        }
        host.set_pwm(self.pin, 0)
            .map_err(|e| format!("stopping the pulse on GPIO {}: {e}", self.pin))?;
        self.pulsing = false;
        self.publish(host);
        Ok(())
    }

    fn command(&mut self, host: &mut dyn Host, value: &str) -> Result<(), String> {
        let angle = self.parse_target(value)?;
        self.move_to(host, angle)
    }

    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
        // Keeps pulsing closed, as the host does after a fault or at stop; no stop timer, since
        // the host drops this device's timers when it takes the device down.
        host.cancel_timer(STOP_TIMER);
        host.set_pwm(self.pin, pulse_ns(&self.config, self.config.closed_angle))
            .map_err(|e| format!("setting the pulse on GPIO {}: {e}", self.pin))?;
        self.angle = self.config.closed_angle;
        self.pulsing = true;
        self.publish(host);
        Ok(())
    }
}

site_plugin_api::export_plugin!(Servo);

#[cfg(test)]
mod tests {
    use super::*;
    use site_plugin_api::{Claim, FakeHost, parse_config};

    const PIN: u32 = 12;
    const MOVE_US: u64 = 600_000;

    fn config(extra: &str) -> Config {
        let sep = if extra.is_empty() { "" } else { ", " };
        parse_config(&format!(r#"{{"pin": {PIN}{sep}{extra}}}"#)).unwrap()
    }

    fn servo(extra: &str) -> (FakeHost, Servo) {
        let config = config(extra);
        Servo::check(&config).unwrap();
        let mut host = FakeHost::with_pins(&[PIN]);
        let servo = Servo::create(&mut host, config).unwrap();
        (host, servo)
    }

    fn check_err(extra: &str) -> String {
        Servo::check(&config(extra)).unwrap_err()
    }

    fn pulse(host: &FakeHost) -> Option<u64> {
        host.pwm.get(&PIN).copied()
    }

    #[test]
    fn defaults_match_a_hobby_servo() {
        assert_eq!(
            config(""),
            Config {
                pin: PIN,
                pwm_chip: None,
                pwm_channel: None,
                period_us: 20_000,
                min_pulse_us: 500,
                max_pulse_us: 2500,
                open_angle: 90.0,
                closed_angle: 0.0,
                move_ms: 600,
                hold: false,
            }
        );
    }

    #[test]
    fn defaults_pass_check() {
        assert_eq!(Servo::check(&config("")), Ok(()));
    }

    #[test]
    fn unknown_config_key_is_rejected() {
        let err = parse_config::<Config>(r#"{"pin": 12, "speed": 3}"#).unwrap_err();

        assert!(err.contains("speed"), "{err}");
    }

    #[test]
    fn angle_above_180_is_rejected_naming_the_key() {
        assert!(check_err(r#""open-angle": 181"#).contains("open-angle"));
    }

    #[test]
    fn negative_closed_angle_is_rejected_naming_the_key() {
        assert!(check_err(r#""closed-angle": -1"#).contains("closed-angle"));
    }

    #[test]
    fn equal_open_and_closed_angles_are_rejected() {
        let err = check_err(r#""open-angle": 45, "closed-angle": 45"#);

        assert!(err.contains("open-angle and closed-angle"), "{err}");
    }

    #[test]
    fn min_pulse_below_100us_is_rejected_naming_the_key() {
        assert!(check_err(r#""min-pulse-us": 99"#).contains("min-pulse-us"));
    }

    #[test]
    fn max_pulse_above_3000us_is_rejected_naming_the_key() {
        assert!(check_err(r#""max-pulse-us": 3001"#).contains("max-pulse-us"));
    }

    #[test]
    fn min_pulse_not_below_max_is_rejected() {
        let err = check_err(r#""min-pulse-us": 1500, "max-pulse-us": 1500"#);

        assert!(err.contains("must be less than max-pulse-us"), "{err}");
    }

    #[test]
    fn max_pulse_not_below_period_is_rejected() {
        let err = check_err(r#""period-us": 5000, "max-pulse-us": 5000"#);

        assert!(err.contains("less than period-us"), "{err}");
    }

    #[test]
    fn period_out_of_range_is_rejected_naming_the_key() {
        assert!(check_err(r#""period-us": 4999"#).contains("period-us"));
        assert!(check_err(r#""period-us": 50001"#).contains("period-us"));
    }

    #[test]
    fn range_bounds_are_accepted() {
        let c = config(
            r#""period-us": 5000, "min-pulse-us": 100, "max-pulse-us": 3000, "open-angle": 180, "closed-angle": 0"#,
        );

        assert_eq!(Servo::check(&c), Ok(()));
    }

    #[test]
    fn move_ms_out_of_range_is_rejected_naming_the_key() {
        assert!(check_err(r#""move-ms": 0"#).contains("move-ms"));
    }

    #[test]
    fn servo_pulse_for_open_angle_matches_range() {
        let c = config("");

        assert_eq!(pulse_ns(&c, 0.0), 500_000);
        assert_eq!(pulse_ns(&c, 90.0), 1_500_000);
        assert_eq!(pulse_ns(&c, 180.0), 2_500_000);
    }

    #[test]
    fn create_claims_pwm_at_the_closed_pulse() {
        let (host, _servo) = servo(r#""pwm-chip": 2, "pwm-channel": 1, "closed-angle": 45"#);

        assert_eq!(
            host.claims.get(&PIN),
            Some(&Claim::Pwm(PwmSpec {
                chip: Some(2),
                channel: Some(1),
                period_ns: 20_000_000,
                safe_pulse_ns: 1_000_000,
            }))
        );
    }

    #[test]
    fn create_without_chip_leaves_the_choice_to_the_backend() {
        let (host, _servo) = servo("");

        let Some(Claim::Pwm(spec)) = host.claims.get(&PIN) else {
            panic!("not claimed for PWM: {:?}", host.claims)
        };
        assert_eq!((spec.chip, spec.channel), (None, None));
    }

    #[test]
    fn create_publishes_closed_and_pulsing() {
        let (host, _servo) = servo("");

        assert_eq!(
            host.state,
            json!({"state": "closed", "angle": 0.0, "pulsing": true})
        );
    }

    #[test]
    fn create_stops_pulsing_after_move_ms() {
        let (mut host, mut servo) = servo("");

        host.advance(&mut servo, MOVE_US).unwrap();

        assert_eq!(pulse(&host), Some(0));
        assert_eq!(host.state["pulsing"], false);
    }

    #[test]
    fn create_fails_when_the_host_refuses_the_pin() {
        let mut host = FakeHost::with_pins(&[PIN + 1]);

        let err = Servo::create(&mut host, config("")).unwrap_err();

        assert!(err.contains("GPIO 12"), "{err}");
    }

    #[test]
    fn open_moves_to_the_open_pulse() {
        let (mut host, mut servo) = servo("");

        servo.command(&mut host, "open").unwrap();

        assert_eq!(pulse(&host), Some(1_500_000));
        assert_eq!(
            host.state,
            json!({"state": "open", "angle": 90.0, "pulsing": true})
        );
    }

    #[test]
    fn close_and_closed_move_to_the_closed_pulse() {
        let (mut host, mut servo) = servo("");
        servo.command(&mut host, "open").unwrap();

        servo.command(&mut host, "close").unwrap();
        let after_close = pulse(&host);
        servo.command(&mut host, "open").unwrap();
        servo.command(&mut host, "closed").unwrap();

        assert_eq!(after_close, Some(500_000));
        assert_eq!(pulse(&host), Some(500_000));
        assert_eq!(host.state_word(), Some("closed"));
    }

    #[test]
    fn angle_between_positions_is_moved() {
        let (mut host, mut servo) = servo("");

        servo.command(&mut host, "45").unwrap();

        assert_eq!(pulse(&host), Some(1_000_000));
        assert_eq!(
            host.state,
            json!({"state": "moved", "angle": 45.0, "pulsing": true})
        );
    }

    #[test]
    fn angle_equal_to_open_angle_is_open() {
        let (mut host, mut servo) = servo("");

        servo.command(&mut host, "90").unwrap();

        assert_eq!(host.state_word(), Some("open"));
    }

    #[test]
    fn angle_out_of_range_is_an_error_and_does_not_move() {
        let (mut host, mut servo) = servo("");

        let err = servo.command(&mut host, "181").unwrap_err();

        assert!(err.contains("0..=180"), "{err}");
        assert!(host.pwm_writes.is_empty());
    }

    #[test]
    fn non_finite_angle_is_an_error() {
        let (mut host, mut servo) = servo("");

        assert!(servo.command(&mut host, "NaN").is_err());
        assert!(servo.command(&mut host, "inf").is_err());
        assert!(host.pwm_writes.is_empty());
    }

    #[test]
    fn unknown_command_names_what_is_accepted() {
        let (mut host, mut servo) = servo("");

        let err = servo.command(&mut host, "ajar").unwrap_err();

        assert!(err.contains("open, closed or an angle"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn servo_stops_pulsing_after_move_unless_hold() {
        let (mut host, mut servo) = servo("");
        host.advance(&mut servo, MOVE_US).unwrap();
        servo.command(&mut host, "open").unwrap();

        host.advance(&mut servo, MOVE_US - 1).unwrap();
        let during = pulse(&host);
        host.advance(&mut servo, 1).unwrap();

        assert_eq!(during, Some(1_500_000));
        assert_eq!(pulse(&host), Some(0));
        assert_eq!(
            host.state,
            json!({"state": "open", "angle": 90.0, "pulsing": false})
        );
    }

    #[test]
    fn servo_with_hold_keeps_pulsing() {
        let (mut host, mut servo) = servo(r#""hold": true"#);
        servo.command(&mut host, "open").unwrap();

        host.advance(&mut servo, 10 * MOVE_US).unwrap();

        assert!(host.timers.is_empty());
        assert_eq!(pulse(&host), Some(1_500_000));
        assert_eq!(host.state["pulsing"], true);
    }

    #[test]
    fn second_move_restarts_the_stop_clock() {
        let (mut host, mut servo) = servo("");
        servo.command(&mut host, "open").unwrap();
        host.advance(&mut servo, MOVE_US / 2).unwrap();

        servo.command(&mut host, "closed").unwrap();
        host.advance(&mut servo, MOVE_US / 2 + 1).unwrap();

        assert_eq!(pulse(&host), Some(500_000));
    }

    #[test]
    fn failed_pwm_write_is_an_error_and_keeps_the_state() {
        let (mut host, mut servo) = servo("");
        host.fail_hardware = true;

        let err = servo.command(&mut host, "open").unwrap_err();

        assert!(err.contains("GPIO 12"), "{err}");
        assert_eq!(host.state_word(), Some("closed"));
    }

    #[test]
    fn safe_state_returns_to_closed_and_cancels_the_stop_timer() {
        let (mut host, mut servo) = servo("");
        servo.command(&mut host, "open").unwrap();

        servo.safe_state(&mut host).unwrap();

        assert_eq!(pulse(&host), Some(500_000));
        assert!(host.timers.is_empty());
        assert_eq!(host.state_word(), Some("closed"));
    }

    #[test]
    fn servo_rejects_simulate() {
        let (_host, mut servo) = servo("");

        assert!(servo.simulate("open").is_err());
    }
}
