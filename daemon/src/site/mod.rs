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

/// The modules this node runs, bound together: device events go to each, and the emergency
/// door releases access control's doors on the same node.
#[derive(Default)]
pub struct Site {
    pub access: Option<access::AccessControl>,
    pub emergency: Option<emergency::Emergency>,
    pub office: Option<office::Office>,
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
        fx
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
        fx
    }

    pub fn on_timer(&mut self, timer: SiteTimer) -> Effects {
        match (timer, &mut self.access) {
            (SiteTimer::AccessPhase, Some(a)) => a.on_timer(),
            _ => Effects::default(),
        }
    }

    /// For `sitectl status`: one object per module this node runs.
    pub fn status(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(a) = &self.access {
            map.insert("access".into(), a.status());
        }
        if let Some(e) = &self.emergency {
            map.insert("emergency".into(), e.status());
        }
        if let Some(o) = &self.office {
            map.insert("office".into(), o.status());
        }
        serde_json::Value::Object(map)
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
        }
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
