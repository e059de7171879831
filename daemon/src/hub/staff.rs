//! The staff-on-premises counter (seed 000): +1 on ENTRY, -1 on EXIT (never below zero: an
//! EXIT at zero is an anomaly and the count stays 0), 0 on EMERGENCY_OPEN.

use crate::site::Report;

/// What applying one report did: the new count and the event-log description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub staff: u64,
    pub description: String,
    /// An EXIT at zero: logged loudly, count unchanged.
    pub anomaly: bool,
}

pub fn apply(staff: u64, report: Report, client: &str) -> Applied {
    match report {
        Report::Entry => Applied {
            staff: staff + 1,
            description: format!("Staff member entered via access control ({client})"),
            anomaly: false,
        },
        Report::Exit if staff == 0 => Applied {
            staff: 0,
            description: format!(
                "Staff member left via access control ({client}) but the count was already 0 (anomaly)"
            ),
            anomaly: true,
        },
        Report::Exit => Applied {
            staff: staff - 1,
            description: format!("Staff member left via access control ({client})"),
            anomaly: false,
        },
        Report::EmergencyOpen => Applied {
            staff: 0,
            description: format!(
                "Emergency exit opened ({client}); staff count reset, everyone leaves by the emergency exit"
            ),
            anomaly: false,
        },
        Report::EmergencyClosed => Applied {
            staff,
            description: format!("Emergency exit closed ({client})"),
            anomaly: false,
        },
    }
}

/// The description of a reset by hand (`sitectl count reset`).
pub fn reset_description(was: u64, uid: u32) -> String {
    format!("Staff count reset by hand (was {was}, by uid {uid})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_counts_up_and_exit_down() {
        assert_eq!(apply(2, Report::Entry, "door").staff, 3);
        assert_eq!(apply(2, Report::Exit, "door").staff, 1);
    }

    #[test]
    fn exit_at_zero_stays_zero_and_is_an_anomaly() {
        let a = apply(0, Report::Exit, "door");
        assert_eq!(a.staff, 0);
        assert!(a.anomaly);
        assert!(a.description.contains("anomaly"));
    }

    #[test]
    fn emergency_open_resets_and_closed_keeps() {
        assert_eq!(apply(5, Report::EmergencyOpen, "exit").staff, 0);
        assert_eq!(apply(0, Report::EmergencyClosed, "exit").staff, 0);
        assert_eq!(apply(3, Report::EmergencyClosed, "exit").staff, 3);
    }

    #[test]
    fn descriptions_follow_the_seed_wording() {
        assert!(
            apply(0, Report::Entry, "door")
                .description
                .starts_with("Staff member entered via access control")
        );
    }
}
