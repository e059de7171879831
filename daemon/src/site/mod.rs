//! The site logic (DESIGN.md §7): access control, the emergency exit and office automation.
//! Each module is a pure state machine bound by config to device names: it takes a device
//! event (or its own timer) and the time, and returns [`Effects`]: commands for devices, timer
//! requests, reports for the hub and log notes. No I/O, no pins; the loop carries them out.

pub mod access;
pub mod emergency;
pub mod office;

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
