//! Threshold rules (seed 002, submission 3): a rule is idle or active; it becomes active when a
//! reading exceeds `above`, and idle again only when a reading falls below `above -
//! hysteresis`, so a reading that wobbles around the threshold does not flap the fan. Pure:
//! the site runner hands it the hub's readings, and [`super::Site`] turns its wish into a command for
//! its device (combined with the office's wish when they share one).

/// What a rule watches and drives.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleConfig {
    /// Keys the saved state and names the rule in status and logs.
    pub name: String,
    pub sensor: String,
    pub quantity: String,
    pub above: f64,
    pub hysteresis: f64,
    pub device: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleState {
    Idle,
    Active,
}

pub struct Rule {
    config: RuleConfig,
    state: RuleState,
    /// The last reading this rule saw (not saved: status only).
    last: Option<f64>,
}

impl Rule {
    /// `state` comes from the state file, so a restart does not forget an active rule.
    pub fn new(config: RuleConfig, state: RuleState) -> Self {
        Rule {
            config,
            state,
            last: None,
        }
    }

    pub fn config(&self) -> &RuleConfig {
        &self.config
    }

    pub fn state(&self) -> RuleState {
        self.state
    }

    /// The rule wants its device on.
    pub fn wants_on(&self) -> bool {
        self.state == RuleState::Active
    }

    pub fn status(&self) -> site_proto::RuleStatus {
        site_proto::RuleStatus {
            name: self.config.name.clone(),
            sensor: self.config.sensor.clone(),
            quantity: self.config.quantity.clone(),
            above: self.config.above,
            hysteresis: self.config.hysteresis,
            device: self.config.device.clone(),
            state: match self.state {
                RuleState::Idle => "idle",
                RuleState::Active => "active",
            }
            .into(),
            last: self.last,
        }
    }

    /// A reading arrived; returns the new state if it changed.
    pub fn on_reading(&mut self, sensor: &str, quantity: &str, value: f64) -> Option<RuleState> {
        if sensor != self.config.sensor || quantity != self.config.quantity || !value.is_finite() {
            return None;
        }
        self.last = Some(value);
        let next = match self.state {
            RuleState::Idle if value > self.config.above => RuleState::Active,
            RuleState::Active if value < self.config.above - self.config.hysteresis => {
                RuleState::Idle
            }
            same => same,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan_rule() -> Rule {
        Rule::new(
            RuleConfig {
                name: "fan".into(),
                sensor: "Sensor01".into(),
                quantity: "temperature".into(),
                above: 25.0,
                hysteresis: 0.5,
                device: "office_fan".into(),
            },
            RuleState::Idle,
        )
    }

    #[test]
    fn above_the_threshold_activates_and_switches_on() {
        let mut r = fan_rule();
        assert_eq!(
            r.on_reading("Sensor01", "temperature", 25.0),
            None,
            "not above"
        );
        assert_eq!(
            r.on_reading("Sensor01", "temperature", 25.1),
            Some(RuleState::Active)
        );
        assert!(r.wants_on());
    }

    #[test]
    fn hysteresis_keeps_it_active_until_below_above_minus_hysteresis() {
        let mut r = fan_rule();
        r.on_reading("Sensor01", "temperature", 26.0);
        assert_eq!(r.on_reading("Sensor01", "temperature", 24.6), None);
        assert_eq!(
            r.on_reading("Sensor01", "temperature", 24.5),
            None,
            "not below 24.5"
        );
        assert_eq!(
            r.on_reading("Sensor01", "temperature", 24.4),
            Some(RuleState::Idle)
        );
        assert!(!r.wants_on());
    }

    #[test]
    fn other_sensors_quantities_and_non_numbers_are_ignored() {
        let mut r = fan_rule();
        assert_eq!(r.on_reading("Sensor02", "temperature", 30.0), None);
        assert_eq!(r.on_reading("Sensor01", "humidity", 90.0), None);
        assert_eq!(r.on_reading("Sensor01", "temperature", f64::NAN), None);
        assert_eq!(r.state(), RuleState::Idle);
    }

    #[test]
    fn a_persisted_active_state_is_kept() {
        let r = Rule::new(fan_rule().config().clone(), RuleState::Active);
        assert!(r.wants_on());
    }
}
