//! The registry of named device instances: which plugin instance owns which pin, the edges and
//! timers routed to them, commands from the site and from `sitectl`, and faults. A device whose
//! plugin panics (or fails while handling an edge or timer) is put in its safe state and shown
//! as faulted; the rest of the site carries on. Knows nothing of the site logic.

use crate::config::{Config, DeviceSection};
use crate::hw::{Edge, Hardware, Pin};
use crate::plugin_host::{self, CallError, Instance, Libraries, TimerOp};
use crate::timers::{TimerAsk, TimerAsks};
use site_plugin_api::Role;
use site_proto::{DeviceStatus, ErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A device timer: which instance (its unique generation) and the plugin's own timer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceTimer {
    generation: u64,
    id: u64,
}

/// Something a device reported, in its own vocabulary (`entry_button pressed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEvent {
    pub device: String,
    pub event: String,
    pub at: Duration,
}

/// Why a command or simulation was not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CommandError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CommandError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

struct Slot {
    section: DeviceSection,
    /// Unique per created instance, so timers of a re-created device never reach the new one.
    generation: u64,
    instance: Option<Instance>,
    role: Option<Role>,
    fault: Option<String>,
}

/// Every configured device, in config order.
#[derive(Default)]
pub struct Devices {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    by_pin: HashMap<Pin, usize>,
    by_generation: HashMap<u64, usize>,
    next_generation: u64,
    /// The plugins' timer requests, for the loop's heap. A timer of a device that has since
    /// faulted or been re-created is dropped when it fires (by its generation), so none is
    /// cancelled here.
    timers: TimerAsks<DeviceTimer>,
}

/// `sited --check-config`: loads a config file the way the daemon would, plugins included,
/// and starts nothing. `plugin_dir` overrides the file's own, to check a config meant for
/// another machine.
pub fn check_config(
    path: &std::path::Path,
    plugin_dir: Option<&std::path::Path>,
) -> Result<Config, crate::config::Error> {
    let mut config = crate::config::load(path)?;
    if let Some(dir) = plugin_dir {
        config.daemon.plugin_dir = dir.to_path_buf();
    }
    check(&config, &mut Libraries::new())?;
    Ok(config)
}

/// Plugin checks for every device in `config` (kind exists, its keys are valid), as
/// `--check-config` and a reload run them before anything is created.
pub fn check(config: &Config, libs: &mut Libraries) -> Result<(), crate::config::Error> {
    for (i, dev) in config.devices.iter().enumerate() {
        let lib = libs
            .load(&config.daemon.plugin_dir, &dev.kind)
            .map_err(|e| config.device_error(i, "kind", e.to_string()))?;
        plugin_host::validate(&lib, &dev.name, dev.pin, &dev.plugin_config_json())
            .map_err(|msg| config.plugin_error(i, &msg))?;
    }
    Ok(())
}

impl Devices {
    /// Creates every device in `config`, outputs first so they are at their safe level before
    /// any input can report. A device that cannot be created is shown as faulted, with the
    /// reason, and the others still run: one broken servo must not silence the siren.
    pub fn create_all(config: &Config, libs: &mut Libraries, hw: &mut dyn Hardware) -> Devices {
        let mut devices = Devices::default();
        devices.assemble_all(
            &config.devices,
            &mut HashMap::new(),
            &config.daemon.plugin_dir,
            libs,
            hw,
        );
        devices
    }

    fn push_slot(&mut self, section: DeviceSection) -> usize {
        let index = self.slots.len();
        self.by_name.insert(section.name.clone(), index);
        self.by_pin.insert(section.pin, index);
        self.slots.push(Slot {
            section,
            generation: 0,
            instance: None,
            role: None,
            fault: None,
        });
        index
    }

    fn instantiate(
        &mut self,
        index: usize,
        plugin_dir: &std::path::Path,
        libs: &mut Libraries,
        hw: &mut dyn Hardware,
    ) -> Result<(), String> {
        let section = self.slots[index].section.clone();
        let lib = libs
            .load(plugin_dir, &section.kind)
            .map_err(|e| format!("device \"{}\": {e}", section.name))?;
        let role = lib.role;
        let mut instance = Instance::create(
            lib,
            &section.name,
            section.pin,
            &section.plugin_config_json(),
            hw,
        )
        .map_err(|e| e.to_string())?;
        self.next_generation += 1;
        let generation = self.next_generation;
        let ops = instance.take_timer_ops();
        instance.take_events();
        let slot = &mut self.slots[index];
        slot.generation = generation;
        slot.instance = Some(instance);
        slot.role = Some(role);
        slot.fault = None;
        self.by_generation.insert(generation, index);
        self.apply_timer_ops(generation, ops);
        Ok(())
    }

    fn apply_timer_ops(&mut self, generation: u64, ops: Vec<TimerOp>) {
        let now = crate::timers::monotonic_now();
        for op in ops {
            match op {
                TimerOp::Arm { id, after_us } => self.timers.arm(
                    DeviceTimer { generation, id },
                    now + Duration::from_micros(after_us),
                ),
                TimerOp::Cancel { id } => self.timers.cancel(DeviceTimer { generation, id }),
            }
        }
    }

    /// Collects what a call produced, or faults the device if the call failed.
    fn after_call(
        &mut self,
        index: usize,
        result: Result<(), CallError>,
        at: Duration,
        hw: &mut dyn Hardware,
        out: &mut Vec<DeviceEvent>,
    ) -> Result<(), CallError> {
        let slot = &mut self.slots[index];
        let generation = slot.generation;
        let Some(instance) = slot.instance.as_mut() else {
            return result;
        };
        let ops = instance.take_timer_ops();
        let events = instance.take_events();
        let name = slot.section.name.clone();
        self.apply_timer_ops(generation, ops);
        out.extend(events.into_iter().map(|event| DeviceEvent {
            device: name.clone(),
            event,
            at,
        }));
        if let Err(CallError::Panicked(message)) = &result {
            self.fault(index, message.clone(), hw);
        }
        result
    }

    /// Faults a device: the host drives its outputs safe itself and never calls it again.
    fn fault(&mut self, index: usize, message: String, hw: &mut dyn Hardware) {
        let slot = &mut self.slots[index];
        log::error!(
            "device \"{}\" is FAULTED and in its safe state: {message}",
            slot.section.name
        );
        if let Some(instance) = slot.instance.as_mut() {
            instance.force_safe(hw);
        }
        slot.fault = Some(message);
    }

    fn live(&mut self, index: usize) -> Result<&mut Instance, CallError> {
        let slot = &mut self.slots[index];
        if let Some(fault) = &slot.fault {
            return Err(CallError::Faulted(fault.clone()));
        }
        slot.instance
            .as_mut()
            .ok_or_else(|| CallError::Faulted("not created".into()))
    }

    /// Routes an edge to the device that claimed its pin.
    pub fn on_edge(&mut self, edge: Edge, hw: &mut dyn Hardware, out: &mut Vec<DeviceEvent>) {
        let Some(&index) = self.by_pin.get(&edge.pin) else {
            log::debug!("edge on unclaimed GPIO {} ignored", edge.pin);
            return;
        };
        let Ok(instance) = self.live(index) else {
            return;
        };
        let result = instance.on_edge(hw, edge.pin, edge.level, edge.at.as_micros() as u64);
        let result = escalate(result);
        let _ = self.after_call(index, result, edge.at, hw, out);
    }

    /// The timers the plugins asked for since the last look, for the loop's heap.
    pub fn take_timer_asks(&mut self) -> Vec<TimerAsk<DeviceTimer>> {
        self.timers.take()
    }

    /// A device timer fired: it goes to its instance, unless that has since faulted or been
    /// re-created.
    pub fn on_timer(
        &mut self,
        timer: DeviceTimer,
        now: Duration,
        hw: &mut dyn Hardware,
        out: &mut Vec<DeviceEvent>,
    ) {
        let Some(&index) = self.by_generation.get(&timer.generation) else {
            return;
        };
        if self.slots[index].generation != timer.generation {
            return;
        }
        let Ok(instance) = self.live(index) else {
            return;
        };
        let result = escalate(instance.on_timer(hw, timer.id));
        let _ = self.after_call(index, result, now, hw, out);
    }

    fn index(&self, name: &str) -> Result<usize, CommandError> {
        self.by_name.get(name).copied().ok_or_else(|| {
            CommandError::new(
                ErrorKind::NotFound,
                format!(
                    "no device named \"{name}\" (devices: {})",
                    self.names().join(", ")
                ),
            )
        })
    }

    /// The device called `name`, if it has the role the request needs.
    fn index_for(&self, name: &str, role: Role) -> Result<usize, CommandError> {
        let index = self.index(name)?;
        let kind = &self.slots[index].section.kind;
        match (self.slots[index].role, role) {
            (Some(Role::Input), Role::Output) => Err(CommandError::new(
                ErrorKind::Rejected,
                format!("\"{name}\" is an input ({kind}); use `sitectl sim` on the sim backend"),
            )),
            (Some(Role::Output), Role::Input) => Err(CommandError::new(
                ErrorKind::Rejected,
                format!("\"{name}\" is an output ({kind}); drive it with `sitectl set`"),
            )),
            _ => Ok(index),
        }
    }

    /// How many devices are faulted.
    pub fn faulted(&self) -> usize {
        self.slots.iter().filter(|s| s.fault.is_some()).count()
    }

    /// Device names in config order.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.section.name.clone()).collect()
    }

    /// Drives an output (`sitectl set`, or a site module's command).
    pub fn command(
        &mut self,
        name: &str,
        value: &str,
        hw: &mut dyn Hardware,
        out: &mut Vec<DeviceEvent>,
    ) -> Result<(), CommandError> {
        let index = self.index_for(name, Role::Output)?;
        let instance = self
            .live(index)
            .map_err(|e| CommandError::new(ErrorKind::Failed, format!("{name}: {e}")))?;
        let result = instance.command(hw, value);
        let at = crate::timers::monotonic_now();
        self.after_call(index, result, at, hw, out)
            .map_err(|e| command_error(name, e))
    }

    /// Makes a simulated input read as `value`; the edge then arrives through the backend.
    pub fn simulate(
        &mut self,
        name: &str,
        value: &str,
        hw: &mut dyn Hardware,
    ) -> Result<(), CommandError> {
        let index = self.index_for(name, Role::Input)?;
        if hw.name() != "sim" {
            return Err(CommandError::new(
                ErrorKind::Rejected,
                format!(
                    "the {} backend has real pins; `sitectl sim` works only with backend = \"sim\"",
                    hw.name()
                ),
            ));
        }
        let instance = self
            .live(index)
            .map_err(|e| CommandError::new(ErrorKind::Failed, format!("{name}: {e}")))?;
        let outcome = instance.simulate(value);
        let mut ignored = Vec::new();
        let at = crate::timers::monotonic_now();
        let status = self.after_call(
            index,
            outcome.as_ref().map(|_| ()).map_err(Clone::clone),
            at,
            hw,
            &mut ignored,
        );
        let (pin, level) = match (status, outcome) {
            (Ok(()), Ok(pin_level)) => pin_level,
            (Err(e), _) | (Ok(()), Err(e)) => return Err(command_error(name, e)),
        };
        hw.simulate(pin, level)
            .map_err(|e| CommandError::new(ErrorKind::Failed, format!("{name}: {e}")))
    }

    /// The status of every device, for `sitectl status`.
    pub fn status(&self) -> BTreeMap<String, DeviceStatus> {
        self.slots
            .iter()
            .map(|slot| {
                let mut detail = slot
                    .instance
                    .as_ref()
                    .map(|i| i.state().clone())
                    .unwrap_or_default();
                let word = detail
                    .remove("state")
                    .and_then(|v| v.as_str().map(str::to_string));
                let state = match (&slot.fault, word) {
                    (Some(_), _) => "faulted".to_string(),
                    (None, Some(w)) => w,
                    (None, None) => "unknown".to_string(),
                };
                let role = match slot.role {
                    Some(Role::Input) => "input",
                    Some(Role::Output) => "output",
                    None => "unknown",
                };
                (
                    slot.section.name.clone(),
                    DeviceStatus {
                        kind: slot.section.kind.clone(),
                        pin: slot.section.pin,
                        role: role.to_string(),
                        state,
                        detail,
                        fault: slot.fault.clone(),
                    },
                )
            })
            .collect()
    }

    /// The state word of a device (`pressed`, `open`, ...), if it is running.
    pub fn state_of(&self, name: &str) -> Option<String> {
        let slot = &self.slots[*self.by_name.get(name)?];
        if slot.fault.is_some() {
            return None;
        }
        slot.instance
            .as_ref()?
            .state()
            .get("state")?
            .as_str()
            .map(str::to_string)
    }

    /// Puts every device in its safe state (the plugin's own, then the host's as a backstop)
    /// and releases its pins. Used at stop.
    pub fn shutdown(&mut self, hw: &mut dyn Hardware) {
        for index in 0..self.slots.len() {
            self.take_down(index, hw);
        }
        self.timers.take();
    }

    fn take_down(&mut self, index: usize, hw: &mut dyn Hardware) {
        let slot = &mut self.slots[index];
        let generation = slot.generation;
        if let Some(mut instance) = slot.instance.take() {
            if slot.fault.is_none()
                && let Err(e) = instance.safe_state(hw)
            {
                log::error!("device \"{}\": safe state failed: {e}", slot.section.name);
            }
            instance.force_safe(hw);
            instance.release(hw);
        }
        self.by_generation.remove(&generation);
    }

    /// Applies a new (already checked) config: devices whose table did not change keep their
    /// instance and state; changed, removed and faulted ones are taken down, new ones created.
    /// If any new device fails, everything is put back as it was and the reason returned.
    pub fn reload(
        &mut self,
        old_plugin_dir: &std::path::Path,
        config: &Config,
        libs: &mut Libraries,
        hw: &mut dyn Hardware,
    ) -> Result<(), String> {
        let old_sections: Vec<DeviceSection> =
            self.slots.iter().map(|s| s.section.clone()).collect();
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            let keep = slot.fault.is_none()
                && slot.instance.is_some()
                && config.devices.contains(&slot.section);
            if !keep {
                self.take_down(index, hw);
            }
        }
        let mut kept = self.take_slots();
        match self.assemble(
            &config.devices,
            &mut kept,
            &config.daemon.plugin_dir,
            libs,
            hw,
        ) {
            Ok(()) => Ok(()),
            Err(message) => {
                for index in 0..self.slots.len() {
                    if !kept_before(&self.slots[index], &old_sections) {
                        self.take_down(index, hw);
                    }
                }
                let mut kept = self.take_slots();
                // Best effort: a device that cannot come back is shown faulted, not fatal.
                let _ = self.assemble_all(&old_sections, &mut kept, old_plugin_dir, libs, hw);
                Err(message)
            }
        }
    }

    /// Empties the registry, returning the live slots by name (timers and generations stay).
    fn take_slots(&mut self) -> HashMap<String, Slot> {
        self.by_name.clear();
        self.by_pin.clear();
        self.by_generation.clear();
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|s| s.instance.is_some())
            .map(|s| (s.section.name.clone(), s))
            .collect()
    }

    /// Fills the registry with `sections`, reusing kept slots whose table is identical and
    /// creating the rest (outputs first). Stops at the first device that cannot be created.
    fn assemble(
        &mut self,
        sections: &[DeviceSection],
        kept: &mut HashMap<String, Slot>,
        plugin_dir: &std::path::Path,
        libs: &mut Libraries,
        hw: &mut dyn Hardware,
    ) -> Result<(), String> {
        let fresh = self.place(sections, kept, plugin_dir, libs);
        for index in fresh {
            self.instantiate(index, plugin_dir, libs, hw)?;
        }
        Ok(())
    }

    /// As [`Devices::assemble`], but a device that cannot be created is marked faulted and the
    /// rest carry on.
    fn assemble_all(
        &mut self,
        sections: &[DeviceSection],
        kept: &mut HashMap<String, Slot>,
        plugin_dir: &std::path::Path,
        libs: &mut Libraries,
        hw: &mut dyn Hardware,
    ) -> usize {
        let fresh = self.place(sections, kept, plugin_dir, libs);
        let mut faulted = 0;
        for index in fresh {
            if let Err(message) = self.instantiate(index, plugin_dir, libs, hw) {
                log::error!("{message}");
                self.slots[index].fault = Some(message);
                faulted += 1;
            }
        }
        faulted
    }

    /// Puts a slot for every section in order, moving kept ones in; returns the indices that
    /// still need an instance, outputs first so they are safe before any input reports.
    fn place(
        &mut self,
        sections: &[DeviceSection],
        kept: &mut HashMap<String, Slot>,
        plugin_dir: &std::path::Path,
        libs: &mut Libraries,
    ) -> Vec<usize> {
        let mut fresh = Vec::new();
        for section in sections {
            let index = self.push_slot(section.clone());
            match kept.remove(&section.name) {
                Some(slot) if slot.section == *section => {
                    self.by_generation.insert(slot.generation, index);
                    self.slots[index] = slot;
                }
                _ => fresh.push(index),
            }
        }
        fresh.sort_by_key(|&i| {
            let input = libs
                .load(plugin_dir, &self.slots[i].section.kind)
                .map(|l| l.role == Role::Input)
                .unwrap_or(true);
            (input, i)
        });
        fresh
    }
}

/// Was this slot carried over unchanged from the previous config?
fn kept_before(slot: &Slot, old_sections: &[DeviceSection]) -> bool {
    slot.generation != 0 && old_sections.contains(&slot.section) && slot.instance.is_some()
}

/// A refusal is the caller's mistake (a value the kind does not take); anything else failed.
fn command_error(name: &str, e: CallError) -> CommandError {
    match e {
        CallError::Refused(m) => CommandError::new(ErrorKind::Rejected, format!("{name}: {m}")),
        other => CommandError::new(ErrorKind::Failed, format!("{name}: {other}")),
    }
}

/// An edge or timer handler that returns an error has left its device in a state we cannot
/// trust (there is no user to tell), so it is treated like a panic: the device is faulted.
fn escalate(result: Result<(), CallError>) -> Result<(), CallError> {
    match result {
        Err(CallError::Refused(m)) => Err(CallError::Panicked(m)),
        other => other,
    }
}
