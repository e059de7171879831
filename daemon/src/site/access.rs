//! Double-door access control (seed 000). The entry button, while idle, opens the entry door
//! and lights its LED for `open-secs`; then that door closes and the exit door opens with its
//! LED for `open-secs`; then both are closed and a completed `ENTRY` is reported. The exit
//! button runs the same cycle from the exit door and reports `EXIT`. Presses during a cycle
//! change nothing (they are logged).
//!
//! Emergency: while the emergency door is open (on a node that also runs `[emergency]`) the
//! doors are *released*: a running cycle is abandoned without a report, both doors open and
//! both LEDs light so nobody is trapped between them, and buttons are ignored. When the
//! emergency door closes, both doors close and access control is idle again.

use super::{Effects, Report, SiteTimer, TimerRequest};
use std::time::Duration;

/// The devices and timing access control is bound to.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessConfig {
    pub entry_button: String,
    pub exit_button: String,
    pub entry_door: String,
    pub exit_door: String,
    pub entry_led: String,
    pub exit_led: String,
    pub open: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Entry,
    Exit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessState {
    Idle,
    /// The first door of a cycle is open.
    FirstDoor(Direction),
    /// The second door of a cycle is open.
    SecondDoor(Direction),
    /// Emergency egress: both doors open until the emergency door closes.
    Released,
}

pub struct AccessControl {
    config: AccessConfig,
    state: AccessState,
}

impl AccessControl {
    pub fn new(config: AccessConfig) -> Self {
        AccessControl {
            config,
            state: AccessState::Idle,
        }
    }

    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    pub fn state(&self) -> AccessState {
        self.state
    }

    /// At start a cycle is never resumed: both doors closed, both LEDs off.
    pub fn start(&mut self) -> Effects {
        self.state = AccessState::Idle;
        let mut fx = Effects::default();
        self.close_all(&mut fx);
        fx
    }

    /// (door, led) opened first and second for a direction.
    fn doors(&self, direction: Direction) -> [(&str, &str); 2] {
        let entry = (
            self.config.entry_door.as_str(),
            self.config.entry_led.as_str(),
        );
        let exit = (
            self.config.exit_door.as_str(),
            self.config.exit_led.as_str(),
        );
        match direction {
            Direction::Entry => [entry, exit],
            Direction::Exit => [exit, entry],
        }
    }

    fn close_all(&self, fx: &mut Effects) {
        for (door, led) in self.doors(Direction::Entry) {
            fx.command(door, "closed");
            fx.command(led, "off");
        }
    }

    pub fn on_device(&mut self, device: &str, event: &str) -> Effects {
        let mut fx = Effects::default();
        if event != "pressed" {
            return fx;
        }
        let direction = if device == self.config.entry_button {
            Direction::Entry
        } else if device == self.config.exit_button {
            Direction::Exit
        } else {
            return fx;
        };
        match self.state {
            AccessState::Idle => {
                let [(door, led), _] = self.doors(direction);
                fx.command(door, "open");
                fx.command(led, "on");
                fx.timers
                    .push(TimerRequest::Arm(SiteTimer::AccessPhase, self.config.open));
                fx.info(format!(
                    "access: {} cycle started, {door} open",
                    if direction == Direction::Entry {
                        "entry"
                    } else {
                        "exit"
                    }
                ));
                self.state = AccessState::FirstDoor(direction);
            }
            busy => fx.info(format!(
                "access: {device} pressed during {}; ignored",
                describe(busy)
            )),
        }
        fx
    }

    /// The door open time is up: move the cycle on.
    pub fn on_timer(&mut self) -> Effects {
        let mut fx = Effects::default();
        match self.state {
            AccessState::FirstDoor(direction) => {
                let [(first, first_led), (second, second_led)] = self.doors(direction);
                fx.command(first, "closed");
                fx.command(first_led, "off");
                fx.command(second, "open");
                fx.command(second_led, "on");
                fx.timers
                    .push(TimerRequest::Arm(SiteTimer::AccessPhase, self.config.open));
                self.state = AccessState::SecondDoor(direction);
            }
            AccessState::SecondDoor(direction) => {
                let [_, (second, second_led)] = self.doors(direction);
                fx.command(second, "closed");
                fx.command(second_led, "off");
                fx.reports.push(match direction {
                    Direction::Entry => Report::Entry,
                    Direction::Exit => Report::Exit,
                });
                self.state = AccessState::Idle;
            }
            AccessState::Idle | AccessState::Released => {}
        }
        fx
    }

    /// The emergency door opened: abandon any cycle and open both doors for egress.
    pub fn release(&mut self) -> Effects {
        let mut fx = Effects::default();
        if let AccessState::FirstDoor(_) | AccessState::SecondDoor(_) = self.state {
            fx.warn(format!(
                "access: {} abandoned for the emergency; not reported",
                describe(self.state)
            ));
        }
        fx.timers.push(TimerRequest::Cancel(SiteTimer::AccessPhase));
        for (door, led) in self.doors(Direction::Entry) {
            fx.command(door, "open");
            fx.command(led, "on");
        }
        self.state = AccessState::Released;
        fx
    }

    /// The emergency door closed: doors shut, idle again.
    pub fn restore(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.state == AccessState::Released {
            self.close_all(&mut fx);
            self.state = AccessState::Idle;
        }
        fx
    }

    /// For `sitectl status`: `idle`, `entry`, `exit` or `released`, and the doors open.
    pub fn status(&self) -> site_proto::AccessStatus {
        let (word, open): (&str, Vec<&str>) = match self.state {
            AccessState::Idle => ("idle", vec![]),
            AccessState::FirstDoor(d) => (direction_word(d), vec![self.doors(d)[0].0]),
            AccessState::SecondDoor(d) => (direction_word(d), vec![self.doors(d)[1].0]),
            AccessState::Released => (
                "released",
                vec![&self.config.entry_door, &self.config.exit_door],
            ),
        };
        site_proto::AccessStatus {
            state: word.to_string(),
            open: open.into_iter().map(str::to_string).collect(),
            link: None,
        }
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Entry => "entry",
        Direction::Exit => "exit",
    }
}

fn describe(state: AccessState) -> &'static str {
    match state {
        AccessState::Idle => "idle",
        AccessState::FirstDoor(Direction::Entry) | AccessState::SecondDoor(Direction::Entry) => {
            "an entry cycle"
        }
        AccessState::FirstDoor(Direction::Exit) | AccessState::SecondDoor(Direction::Exit) => {
            "an exit cycle"
        }
        AccessState::Released => "the emergency release",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Command;

    fn access() -> AccessControl {
        AccessControl::new(AccessConfig {
            entry_button: "entry_button".into(),
            exit_button: "exit_button".into(),
            entry_door: "entry_door".into(),
            exit_door: "exit_door".into(),
            entry_led: "entry_led".into(),
            exit_led: "exit_led".into(),
            open: Duration::from_secs(5),
        })
    }

    fn cmds(fx: &Effects) -> Vec<(String, &'static str)> {
        fx.commands
            .iter()
            .map(|Command { device, value }| (device.clone(), *value))
            .collect()
    }

    fn c(device: &str, value: &'static str) -> (String, &'static str) {
        (device.to_string(), value)
    }

    #[test]
    fn entry_press_opens_entry_door_and_led_and_arms_the_timer() {
        let mut a = access();
        let fx = a.on_device("entry_button", "pressed");
        assert_eq!(
            cmds(&fx),
            vec![c("entry_door", "open"), c("entry_led", "on")]
        );
        assert_eq!(
            fx.timers,
            vec![TimerRequest::Arm(
                SiteTimer::AccessPhase,
                Duration::from_secs(5)
            )]
        );
        assert_eq!(a.state(), AccessState::FirstDoor(Direction::Entry));
    }

    #[test]
    fn entry_cycle_moves_to_the_exit_door_then_reports_entry() {
        let mut a = access();
        a.on_device("entry_button", "pressed");
        let fx = a.on_timer();
        assert_eq!(
            cmds(&fx),
            vec![
                c("entry_door", "closed"),
                c("entry_led", "off"),
                c("exit_door", "open"),
                c("exit_led", "on")
            ]
        );
        assert!(fx.reports.is_empty());
        let fx = a.on_timer();
        assert_eq!(
            cmds(&fx),
            vec![c("exit_door", "closed"), c("exit_led", "off")]
        );
        assert_eq!(fx.reports, vec![Report::Entry]);
        assert_eq!(a.state(), AccessState::Idle);
    }

    #[test]
    fn exit_cycle_opens_the_exit_door_first_and_reports_exit() {
        let mut a = access();
        let fx = a.on_device("exit_button", "pressed");
        assert_eq!(cmds(&fx), vec![c("exit_door", "open"), c("exit_led", "on")]);
        let fx = a.on_timer();
        assert_eq!(
            cmds(&fx),
            vec![
                c("exit_door", "closed"),
                c("exit_led", "off"),
                c("entry_door", "open"),
                c("entry_led", "on")
            ]
        );
        let fx = a.on_timer();
        assert_eq!(fx.reports, vec![Report::Exit]);
    }

    #[test]
    fn presses_during_a_cycle_change_nothing_and_are_logged() {
        let mut a = access();
        a.on_device("entry_button", "pressed");
        for button in ["entry_button", "exit_button"] {
            let fx = a.on_device(button, "pressed");
            assert!(fx.commands.is_empty() && fx.timers.is_empty() && fx.reports.is_empty());
            assert!(fx.notes[0].1.contains("ignored"), "{:?}", fx.notes);
        }
        a.on_timer();
        let fx = a.on_device("exit_button", "pressed");
        assert!(fx.commands.is_empty());
        assert_eq!(a.state(), AccessState::SecondDoor(Direction::Entry));
    }

    #[test]
    fn releases_and_other_devices_are_ignored() {
        let mut a = access();
        assert_eq!(a.on_device("entry_button", "released"), Effects::default());
        assert_eq!(a.on_device("office_door", "pressed"), Effects::default());
        assert_eq!(a.state(), AccessState::Idle);
    }

    #[test]
    fn emergency_release_abandons_the_cycle_and_opens_both_doors() {
        let mut a = access();
        a.on_device("entry_button", "pressed");
        let fx = a.release();
        assert_eq!(
            fx.timers,
            vec![TimerRequest::Cancel(SiteTimer::AccessPhase)]
        );
        assert!(fx.commands.contains(&Command {
            device: "entry_door".into(),
            value: "open"
        }));
        assert!(fx.commands.contains(&Command {
            device: "exit_door".into(),
            value: "open"
        }));
        assert!(fx.reports.is_empty());
        assert_eq!(a.state(), AccessState::Released);
        assert!(a.on_device("exit_button", "pressed").commands.is_empty());
        assert!(a.on_timer().reports.is_empty());
    }

    #[test]
    fn restore_closes_both_doors_and_goes_idle() {
        let mut a = access();
        a.release();
        let fx = a.restore();
        assert!(fx.commands.contains(&Command {
            device: "entry_door".into(),
            value: "closed"
        }));
        assert!(fx.commands.contains(&Command {
            device: "exit_led".into(),
            value: "off"
        }));
        assert_eq!(a.state(), AccessState::Idle);
        assert!(!a.on_device("entry_button", "pressed").commands.is_empty());
    }

    #[test]
    fn start_closes_everything_and_never_resumes_a_cycle() {
        let mut a = access();
        a.on_device("entry_button", "pressed");
        let fx = a.start();
        assert_eq!(a.state(), AccessState::Idle);
        assert_eq!(fx.commands.len(), 4);
        assert!(
            fx.commands
                .iter()
                .all(|c| c.value == "closed" || c.value == "off")
        );
    }

    #[test]
    fn status_names_the_open_door() {
        let mut a = access();
        assert_eq!(a.status().state, "idle");
        a.on_device("exit_button", "pressed");
        assert_eq!(
            (a.status().state.as_str(), a.status().open),
            ("exit", vec!["exit_door".to_string()])
        );
    }
}
