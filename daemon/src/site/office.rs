//! Office automation (seed 000): light and fan start off. Each time the office door opens and
//! then closes, occupancy toggles, and light and fan follow it the moment the door closes. The
//! toggle switch locks and unlocks the door (the lock output follows the switch). The reed
//! reporting the door opening while locked is logged as a forced door. The office does not
//! report to the hub.

use super::Effects;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfficeConfig {
    pub door: String,
    pub lock_switch: String,
    pub lock: String,
    pub light: String,
    pub fan: String,
}

pub struct Office {
    config: OfficeConfig,
    occupied: bool,
    locked: bool,
    /// The door has opened since it last closed.
    door_open: bool,
}

impl Office {
    /// `occupied` comes from the state file: an occupied office gets its light back at start.
    pub fn new(config: OfficeConfig, occupied: bool) -> Self {
        Office {
            config,
            occupied,
            locked: false,
            door_open: false,
        }
    }

    pub fn config(&self) -> &OfficeConfig {
        &self.config
    }

    pub fn occupied(&self) -> bool {
        self.occupied
    }

    /// Outputs from the inputs as they are now and the persisted occupancy.
    pub fn start(&mut self, door_state: Option<&str>, switch_state: Option<&str>) -> Effects {
        self.door_open = door_state == Some("open");
        self.locked = switch_state == Some("on");
        let mut fx = Effects::default();
        self.follow_occupancy(&mut fx);
        fx.command(&self.config.lock, if self.locked { "on" } else { "off" });
        fx
    }

    fn follow_occupancy(&self, fx: &mut Effects) {
        let value = if self.occupied { "on" } else { "off" };
        fx.command(&self.config.light, value);
        fx.command(&self.config.fan, value);
    }

    pub fn on_device(&mut self, device: &str, event: &str) -> Effects {
        let mut fx = Effects::default();
        if device == self.config.door {
            match event {
                "open" if !self.door_open => {
                    self.door_open = true;
                    if self.locked {
                        fx.warn(format!(
                            "office: FORCED DOOR: {} opened while locked",
                            self.config.door
                        ));
                    }
                }
                "closed" if self.door_open => {
                    self.door_open = false;
                    self.occupied = !self.occupied;
                    fx.info(format!(
                        "office: {}",
                        if self.occupied { "occupied" } else { "empty" }
                    ));
                    self.follow_occupancy(&mut fx);
                }
                _ => {}
            }
        } else if device == self.config.lock_switch {
            let locked = match event {
                "on" => true,
                "off" => false,
                _ => return fx,
            };
            if locked != self.locked {
                self.locked = locked;
                fx.command(&self.config.lock, if locked { "on" } else { "off" });
                fx.info(format!(
                    "office: {}",
                    if locked { "locked" } else { "unlocked" }
                ));
            }
        }
        fx
    }

    pub fn status(&self) -> site_proto::OfficeStatus {
        let on_off = |b: bool| if b { "on" } else { "off" }.to_string();
        site_proto::OfficeStatus {
            occupied: self.occupied,
            locked: self.locked,
            door: if self.door_open { "open" } else { "closed" }.into(),
            light: on_off(self.occupied),
            fan: on_off(self.occupied),
            link: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Command;

    fn office(occupied: bool) -> Office {
        let mut o = Office::new(
            OfficeConfig {
                door: "office_door".into(),
                lock_switch: "lock_switch".into(),
                lock: "office_lock".into(),
                light: "office_light".into(),
                fan: "office_fan".into(),
            },
            occupied,
        );
        o.start(Some("closed"), Some("off"));
        o
    }

    fn has(fx: &Effects, device: &str, value: &str) -> bool {
        fx.commands.iter().any(
            |Command {
                 device: d,
                 value: v,
             }| d == device && *v == value,
        )
    }

    #[test]
    fn light_and_fan_start_off_in_an_empty_office() {
        let mut o = office(false);
        let fx = o.start(Some("closed"), Some("off"));
        assert!(has(&fx, "office_light", "off") && has(&fx, "office_fan", "off"));
        assert!(has(&fx, "office_lock", "off"));
    }

    #[test]
    fn open_then_close_occupies_and_switches_light_and_fan_on_when_it_closes() {
        let mut o = office(false);
        let fx = o.on_device("office_door", "open");
        assert!(
            fx.commands.is_empty(),
            "nothing happens until the door closes"
        );
        let fx = o.on_device("office_door", "closed");
        assert!(has(&fx, "office_light", "on") && has(&fx, "office_fan", "on"));
        assert!(o.occupied());
    }

    #[test]
    fn second_visit_empties_the_office() {
        let mut o = office(false);
        o.on_device("office_door", "open");
        o.on_device("office_door", "closed");
        o.on_device("office_door", "open");
        let fx = o.on_device("office_door", "closed");
        assert!(has(&fx, "office_light", "off") && has(&fx, "office_fan", "off"));
        assert!(!o.occupied());
    }

    #[test]
    fn a_close_without_an_open_changes_nothing() {
        let mut o = office(false);
        assert!(o.on_device("office_door", "closed").commands.is_empty());
        assert!(!o.occupied());
    }

    #[test]
    fn lock_follows_the_switch() {
        let mut o = office(false);
        assert!(has(&o.on_device("lock_switch", "on"), "office_lock", "on"));
        assert!(has(
            &o.on_device("lock_switch", "off"),
            "office_lock",
            "off"
        ));
    }

    #[test]
    fn door_opening_while_locked_is_a_forced_door_warning() {
        let mut o = office(false);
        o.on_device("lock_switch", "on");
        let fx = o.on_device("office_door", "open");
        assert!(
            fx.notes.iter().any(|(_, t)| t.contains("FORCED DOOR")),
            "{:?}",
            fx.notes
        );
    }

    #[test]
    fn persisted_occupancy_brings_light_and_fan_back_at_start() {
        let mut o = office(true);
        let fx = o.start(Some("closed"), Some("on"));
        assert!(has(&fx, "office_light", "on") && has(&fx, "office_fan", "on"));
        assert!(has(&fx, "office_lock", "on"));
    }
}
