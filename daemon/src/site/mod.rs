//! The site logic (DESIGN.md §7): access control, the emergency exit and office automation.
//! Each module is a pure state machine bound by config to device names: it takes a device
//! event (or its own timer) and the time, and returns [`Effects`]: commands for devices, timer
//! requests, reports for the hub and log notes. No I/O, no pins; the loop carries them out.

pub mod access;
pub mod emergency;
pub mod office;
pub mod rules;

use std::time::Duration;

/// A command for a device, in its own vocabulary (`entry_door open`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub device: String,
    pub value: &'static str,
}

/// The timers site modules use; each module has at most one of each running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SiteTimer {
    /// Access control: the current door has been open for `open-secs`.
    AccessPhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    Arm(SiteTimer, Duration),
    Cancel(SiteTimer),
}

/// What a module reports to its hub (seed 000's events). The wire names are the hub
/// protocol's `EVENT <seq> <KIND>` kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Report {
    Entry,
    Exit,
    EmergencyOpen,
    EmergencyClosed,
}

impl Report {
    pub fn wire(self) -> &'static str {
        match self {
            Report::Entry => "ENTRY",
            Report::Exit => "EXIT",
            Report::EmergencyOpen => "EMERGENCY_OPEN",
            Report::EmergencyClosed => "EMERGENCY_CLOSED",
        }
    }

    pub fn from_wire(kind: &str) -> Option<Report> {
        match kind {
            "ENTRY" => Some(Report::Entry),
            "EXIT" => Some(Report::Exit),
            "EMERGENCY_OPEN" => Some(Report::EmergencyOpen),
            "EMERGENCY_CLOSED" => Some(Report::EmergencyClosed),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteLevel {
    Info,
    Warn,
}

/// Everything a module wants done after one input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub commands: Vec<Command>,
    pub timers: Vec<TimerRequest>,
    pub reports: Vec<Report>,
    pub notes: Vec<(NoteLevel, String)>,
}

impl Effects {
    pub fn command(&mut self, device: &str, value: &'static str) {
        self.commands.push(Command {
            device: device.to_string(),
            value,
        });
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.notes.push((NoteLevel::Info, text.into()));
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.notes.push((NoteLevel::Warn, text.into()));
    }

    /// Appends another module's effects.
    pub fn merge(&mut self, other: Effects) {
        self.commands.extend(other.commands);
        self.timers.extend(other.timers);
        self.reports.extend(other.reports);
        self.notes.extend(other.notes);
    }
}

/// The modules this node runs, bound together: device events go to each, the emergency door
/// releases access control's doors on the same node, and hub readings go to the rules.
///
/// A rule's device may also be the office's light or fan, or another rule's device. Such a
/// shared output is a set of on/off wishes and whoever wants it on wins: the fan runs while the
/// office is occupied *or* any of its rules is active, and goes off only when nobody wants it.
/// So a hot empty office is still cooled, and a rule going idle does not switch off the fan of
/// an occupied office. Every command for a shared output is rewritten to that combination.
#[derive(Default)]
pub struct Site {
    pub access: Option<access::AccessControl>,
    pub emergency: Option<emergency::Emergency>,
    pub office: Option<office::Office>,
    pub rules: Vec<rules::Rule>,
}

/// Which module a report came from (its outbox and hub link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    Access,
    Emergency,
}

impl Module {
    pub fn key(self) -> &'static str {
        match self {
            Module::Access => "access",
            Module::Emergency => "emergency",
        }
    }
}

impl Report {
    pub fn module(self) -> Module {
        match self {
            Report::Entry | Report::Exit => Module::Access,
            Report::EmergencyOpen | Report::EmergencyClosed => Module::Emergency,
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

impl Site {
    /// Outputs from the inputs as they are now (`state_of` gives a device's state word).
    pub fn start(&mut self, state_of: impl Fn(&str) -> Option<String>) -> Effects {
        let mut fx = Effects::default();
        if let Some(a) = &mut self.access {
            fx.merge(a.start());
        }
        if let Some(e) = &mut self.emergency {
            fx.merge(e.start(state_of(&e.config().door).as_deref()));
            if e.is_open()
                && let Some(a) = &mut self.access
            {
                fx.merge(a.release());
            }
        }
        if let Some(o) = &mut self.office {
            let door = state_of(&o.config().door);
            let switch = state_of(&o.config().lock_switch);
            fx.merge(o.start(door.as_deref(), switch.as_deref()));
        }
        for rule in &self.rules {
            let device = &rule.config().device;
            fx.command(device, on_off(rule.wants_on()));
            if rule.wants_on() {
                fx.info(format!("rule {}: active at start", rule.config().name));
            }
        }
        self.combine(&mut fx);
        fx
    }

    /// A hub reading: rules whose state changes switch their device.
    pub fn on_reading(&mut self, sensor: &str, quantity: &str, value: f64) -> Effects {
        let mut fx = Effects::default();
        for i in 0..self.rules.len() {
            let Some(state) = self.rules[i].on_reading(sensor, quantity, value) else {
                continue;
            };
            let rule = &self.rules[i];
            let c = rule.config();
            let why = match state {
                rules::RuleState::Active => format!("{value} > {}", c.above),
                rules::RuleState::Idle => format!("{value} < {}", c.above - c.hysteresis),
            };
            let wanted = on_off(self.wants_on(&c.device));
            let outcome = if wanted == on_off(rule.wants_on()) {
                format!("{} {wanted}", c.device)
            } else {
                format!(
                    "{} stays {wanted} ({} also {})",
                    c.device,
                    self.wanted_by(&c.device).join(", "),
                    if wanted == "on" {
                        "wants it on"
                    } else {
                        "want it off"
                    }
                )
            };
            fx.info(format!(
                "rule {}: {} ({sensor} {quantity} {why}); {outcome}",
                c.name,
                match state {
                    rules::RuleState::Active => "active",
                    rules::RuleState::Idle => "idle",
                }
            ));
            fx.command(&c.device, on_off(rule.wants_on()));
        }
        self.combine(&mut fx);
        fx
    }

    /// Rule states to save, by rule name.
    pub fn rule_states(&self) -> std::collections::BTreeMap<String, rules::RuleState> {
        self.rules
            .iter()
            .map(|r| (r.config().name.clone(), r.state()))
            .collect()
    }

    /// A rule names this output, so it may have several wishes.
    fn is_shared(&self, device: &str) -> bool {
        self.rules.iter().any(|r| r.config().device == device)
    }

    /// Who wants `device` on: the office (occupied, for its light and fan) and active rules.
    fn wanted_by(&self, device: &str) -> Vec<String> {
        self.wishes(device)
            .map(|rule| match rule {
                None => "office".to_string(),
                Some(name) => format!("rule {name}"),
            })
            .collect()
    }

    /// Whoever wants `device` on: `None` for the office, `Some(name)` for an active rule.
    fn wishes<'a>(&'a self, device: &'a str) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let office = self
            .office
            .as_ref()
            .filter(|o| o.occupied() && (o.config().light == device || o.config().fan == device));
        office.map(|_| None).into_iter().chain(
            self.rules
                .iter()
                .filter(move |r| r.wants_on() && r.config().device == device)
                .map(|r| Some(r.config().name.as_str())),
        )
    }

    /// Somebody wants `device` on (no names built: this runs per command).
    fn wants_on(&self, device: &str) -> bool {
        self.wishes(device).next().is_some()
    }

    /// Rewrites commands for shared outputs to the combined wish (on if anyone wants it on).
    fn combine(&self, fx: &mut Effects) {
        for command in &mut fx.commands {
            if self.is_shared(&command.device) {
                command.value = on_off(self.wants_on(&command.device));
            }
        }
    }

    pub fn on_device(&mut self, device: &str, event: &str) -> Effects {
        let mut fx = Effects::default();
        if let Some(e) = &mut self.emergency {
            let was_open = e.is_open();
            fx.merge(e.on_device(device, event));
            if let Some(a) = &mut self.access {
                match (was_open, e.is_open()) {
                    (false, true) => fx.merge(a.release()),
                    (true, false) => fx.merge(a.restore()),
                    _ => {}
                }
            }
        }
        if let Some(a) = &mut self.access {
            fx.merge(a.on_device(device, event));
        }
        if let Some(o) = &mut self.office {
            fx.merge(o.on_device(device, event));
        }
        self.combine(&mut fx);
        fx
    }

    pub fn on_timer(&mut self, timer: SiteTimer) -> Effects {
        match (timer, &mut self.access) {
            (SiteTimer::AccessPhase, Some(a)) => a.on_timer(),
            _ => Effects::default(),
        }
    }

    /// For `sitectl status`: the modules this node runs, and its rules.
    pub fn status(&self) -> site_proto::SiteStatus {
        let office = self.office.as_ref().map(|o| {
            let mut office = o.status();
            // What the light and fan really get, when a rule shares them.
            if self.is_shared(&o.config().light) {
                office.light = on_off(self.wants_on(&o.config().light)).into();
            }
            if self.is_shared(&o.config().fan) {
                office.fan = on_off(self.wants_on(&o.config().fan)).into();
            }
            office
        });
        site_proto::SiteStatus {
            access: self.access.as_ref().map(access::AccessControl::status),
            emergency: self.emergency.as_ref().map(emergency::Emergency::status),
            office,
            rules: (!self.rules.is_empty())
                .then(|| self.rules.iter().map(rules::Rule::status).collect()),
            other: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            access: Some(access::AccessControl::new(access::AccessConfig {
                entry_button: "entry_button".into(),
                exit_button: "exit_button".into(),
                entry_door: "entry_door".into(),
                exit_door: "exit_door".into(),
                entry_led: "entry_led".into(),
                exit_led: "exit_led".into(),
                open: Duration::from_secs(1),
            })),
            emergency: Some(emergency::Emergency::new(
                emergency::EmergencyConfig {
                    door: "emergency_door".into(),
                    siren: "siren".into(),
                },
                false,
            )),
            office: None,
            rules: Vec::new(),
        }
    }

    fn office_with_fan_rule(occupied: bool, rule: rules::RuleState) -> Site {
        let mut s = Site {
            office: Some(office::Office::new(
                office::OfficeConfig {
                    door: "office_door".into(),
                    lock_switch: "lock_switch".into(),
                    lock: "office_lock".into(),
                    light: "office_light".into(),
                    fan: "office_fan".into(),
                },
                occupied,
            )),
            rules: vec![rules::Rule::new(
                rules::RuleConfig {
                    name: "hot".into(),
                    sensor: "Sensor01".into(),
                    quantity: "temperature".into(),
                    above: 25.0,
                    hysteresis: 0.5,
                    device: "office_fan".into(),
                },
                rule,
            )],
            ..Site::default()
        };
        s.start(|_| Some("closed".into()));
        s
    }

    /// The value the last command for `device` in `fx` sets.
    fn last(fx: &Effects, device: &str) -> Option<&'static str> {
        fx.commands
            .iter()
            .rev()
            .find(|c| c.device == device)
            .map(|c| c.value)
    }

    #[test]
    fn a_rule_switches_its_device_with_hysteresis() {
        let mut s = office_with_fan_rule(false, rules::RuleState::Idle);
        assert_eq!(
            last(&s.on_reading("Sensor01", "temperature", 25.0), "office_fan"),
            None
        );
        let fx = s.on_reading("Sensor01", "temperature", 26.0);
        assert_eq!(last(&fx, "office_fan"), Some("on"));
        assert!(fx.notes[0].1.contains("rule hot: active"), "{:?}", fx.notes);
        assert_eq!(
            last(&s.on_reading("Sensor01", "temperature", 24.8), "office_fan"),
            None
        );
        assert_eq!(
            last(&s.on_reading("Sensor01", "temperature", 24.4), "office_fan"),
            Some("off")
        );
        let rules = s.status().rules.expect("rules");
        assert_eq!(rules[0].state, "idle");
        assert_eq!(rules[0].last, Some(24.4));
    }

    #[test]
    fn an_idle_rule_does_not_switch_off_an_occupied_offices_fan() {
        let mut s = office_with_fan_rule(true, rules::RuleState::Idle);
        s.on_reading("Sensor01", "temperature", 26.0);
        let fx = s.on_reading("Sensor01", "temperature", 20.0);
        assert_eq!(last(&fx, "office_fan"), Some("on"), "office still wants it");
        assert!(
            fx.notes[0].1.contains("stays on (office also wants it on)"),
            "{:?}",
            fx.notes
        );
        // The office empties: now nobody wants the fan.
        s.on_device("office_door", "open");
        let fx = s.on_device("office_door", "closed");
        assert_eq!(last(&fx, "office_fan"), Some("off"));
        assert_eq!(last(&fx, "office_light"), Some("off"));
    }

    #[test]
    fn an_active_rule_keeps_the_fan_on_when_the_office_empties() {
        let mut s = office_with_fan_rule(true, rules::RuleState::Idle);
        s.on_reading("Sensor01", "temperature", 30.0);
        s.on_device("office_door", "open");
        let fx = s.on_device("office_door", "closed");
        assert_eq!(
            last(&fx, "office_light"),
            Some("off"),
            "the light is not shared"
        );
        assert_eq!(
            last(&fx, "office_fan"),
            Some("on"),
            "the rule still wants it"
        );
        let office = s.status().office.expect("office");
        assert_eq!(office.fan, "on");
        assert_eq!(office.light, "off");
    }

    #[test]
    fn a_saved_active_rule_switches_its_device_on_at_start() {
        let mut s = office_with_fan_rule(false, rules::RuleState::Active);
        let fx = s.start(|_| Some("closed".into()));
        assert_eq!(last(&fx, "office_fan"), Some("on"));
        assert_eq!(last(&fx, "office_light"), Some("off"));
        assert_eq!(s.rule_states().get("hot"), Some(&rules::RuleState::Active));
    }

    #[test]
    fn emergency_door_opening_releases_access_doors_on_the_same_node() {
        let mut s = site();
        s.start(|_| Some("closed".into()));
        s.on_device("entry_button", "pressed");
        let fx = s.on_device("emergency_door", "open");
        assert_eq!(fx.reports, vec![Report::EmergencyOpen]);
        assert!(fx.commands.contains(&Command {
            device: "exit_door".into(),
            value: "open"
        }));
        assert!(fx.commands.contains(&Command {
            device: "siren".into(),
            value: "on"
        }));
        let fx = s.on_device("emergency_door", "closed");
        assert!(fx.commands.contains(&Command {
            device: "exit_door".into(),
            value: "closed"
        }));
    }

    #[test]
    fn emergency_door_open_at_start_releases_access_too() {
        let mut s = site();
        let fx = s.start(|d| {
            Some(
                if d == "emergency_door" {
                    "open"
                } else {
                    "closed"
                }
                .into(),
            )
        });
        assert!(fx.commands.contains(&Command {
            device: "siren".into(),
            value: "on"
        }));
        assert!(fx.commands.contains(&Command {
            device: "entry_door".into(),
            value: "open"
        }));
    }
}
