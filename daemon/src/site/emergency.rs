//! The emergency exit (seed 000): the emergency door's reed opens → siren on and
//! `EMERGENCY_OPEN` reported; it closes → siren off and `EMERGENCY_CLOSED` reported. The hub
//! sets the staff count to zero on `EMERGENCY_OPEN` (company policy: everyone leaves by the
//! emergency exit when anything is wrong).

use super::{Effects, Report};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmergencyConfig {
    pub door: String,
    pub siren: String,
}

pub struct Emergency {
    config: EmergencyConfig,
    /// The door as last reported to the hub (persisted), so a restart neither repeats nor
    /// loses a report.
    reported_open: bool,
    door_open: bool,
}

impl Emergency {
    pub fn new(config: EmergencyConfig, reported_open: bool) -> Self {
        Emergency {
            config,
            reported_open,
            door_open: false,
        }
    }

    pub fn config(&self) -> &EmergencyConfig {
        &self.config
    }

    pub fn is_open(&self) -> bool {
        self.door_open
    }

    /// Whether the last report said open (for the state file).
    pub fn reported_open(&self) -> bool {
        self.reported_open
    }

    /// At start, from the door as it is now: an open door sounds the siren. A change since
    /// the last report (the door opened or closed while sited was down) is reported.
    pub fn start(&mut self, door_state: Option<&str>) -> Effects {
        self.door_open = door_state == Some("open");
        let mut fx = Effects::default();
        fx.command(
            &self.config.siren,
            if self.door_open { "on" } else { "off" },
        );
        if self.door_open {
            fx.warn(format!(
                "emergency: {} is open at start; siren on",
                self.config.door
            ));
        }
        self.report_change(&mut fx);
        fx
    }

    fn report_change(&mut self, fx: &mut Effects) {
        if self.door_open != self.reported_open {
            fx.reports.push(if self.door_open {
                Report::EmergencyOpen
            } else {
                Report::EmergencyClosed
            });
            self.reported_open = self.door_open;
        }
    }

    pub fn on_device(&mut self, device: &str, event: &str) -> Effects {
        let mut fx = Effects::default();
        if device != self.config.door {
            return fx;
        }
        let open = match event {
            "open" => true,
            "closed" => false,
            _ => return fx,
        };
        if open == self.door_open {
            return fx;
        }
        self.door_open = open;
        if open {
            fx.command(&self.config.siren, "on");
            fx.warn(format!("emergency: {} opened; siren on", self.config.door));
        } else {
            fx.command(&self.config.siren, "off");
            fx.info(format!("emergency: {} closed; siren off", self.config.door));
        }
        self.report_change(&mut fx);
        fx
    }

    pub fn status(&self) -> site_proto::EmergencyStatus {
        site_proto::EmergencyStatus {
            door: if self.door_open { "open" } else { "closed" }.into(),
            siren: if self.door_open { "on" } else { "off" }.into(),
            link: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Command;

    fn emergency(reported_open: bool) -> Emergency {
        Emergency::new(
            EmergencyConfig {
                door: "emergency_door".into(),
                siren: "siren".into(),
            },
            reported_open,
        )
    }

    #[test]
    fn door_opening_sounds_the_siren_and_reports_once() {
        let mut e = emergency(false);
        e.start(Some("closed"));
        let fx = e.on_device("emergency_door", "open");
        assert_eq!(
            fx.commands,
            vec![Command {
                device: "siren".into(),
                value: "on"
            }]
        );
        assert_eq!(fx.reports, vec![Report::EmergencyOpen]);
        assert_eq!(e.on_device("emergency_door", "open"), Effects::default());
    }

    #[test]
    fn door_closing_silences_the_siren_and_reports() {
        let mut e = emergency(false);
        e.start(Some("closed"));
        e.on_device("emergency_door", "open");
        let fx = e.on_device("emergency_door", "closed");
        assert_eq!(
            fx.commands,
            vec![Command {
                device: "siren".into(),
                value: "off"
            }]
        );
        assert_eq!(fx.reports, vec![Report::EmergencyClosed]);
    }

    #[test]
    fn open_door_at_start_sounds_the_siren_and_reports_if_not_yet_reported() {
        let mut e = emergency(false);
        let fx = e.start(Some("open"));
        assert_eq!(
            fx.commands,
            vec![Command {
                device: "siren".into(),
                value: "on"
            }]
        );
        assert_eq!(fx.reports, vec![Report::EmergencyOpen]);
    }

    #[test]
    fn already_reported_open_door_at_start_sounds_but_does_not_report_again() {
        let mut e = emergency(true);
        let fx = e.start(Some("open"));
        assert_eq!(
            fx.commands,
            vec![Command {
                device: "siren".into(),
                value: "on"
            }]
        );
        assert!(fx.reports.is_empty());
    }

    #[test]
    fn door_closed_while_down_is_reported_at_start() {
        let mut e = emergency(true);
        let fx = e.start(Some("closed"));
        assert_eq!(fx.reports, vec![Report::EmergencyClosed]);
        assert!(!e.reported_open());
    }

    #[test]
    fn other_devices_are_ignored() {
        let mut e = emergency(false);
        e.start(Some("closed"));
        assert_eq!(e.on_device("office_door", "open"), Effects::default());
    }
}
