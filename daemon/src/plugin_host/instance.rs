//! One device instance inside a plugin, and the host callbacks it reaches the hardware through.
//! The callbacks enforce that a device touches only the pin its config names, and only in the
//! way it claimed it. Events and timer requests are collected during a call and handed to the
//! caller afterwards, so a plugin never re-enters the loop.

use super::Error;
use super::loader::{EntryPoints, PluginLibrary};
use crate::hw::{Hardware, Pin};
use crate::timers::monotonic_now;
use site_plugin_api::abi::{self, HostVtable, StrRef};
use site_plugin_api::{Bias, Level, LogLevel, PwmSpec, Role};
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// How the device claimed a pin, and the level the host restores on fault or stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Input,
    Output { safe: Level },
    Pwm { safe_pulse_ns: u64 },
}

/// A timer request from the plugin, applied to the loop's heap after the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerOp {
    Arm { id: u64, after_us: u64 },
    Cancel { id: u64 },
}

/// What a call into the plugin ended with, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin refused (a bad command value, say). The device carries on.
    Refused(String),
    /// The plugin panicked or reported a broken state: the device must be faulted.
    Panicked(String),
    /// The device is already faulted and is not called any more.
    Faulted(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(m) | CallError::Panicked(m) => f.write_str(m),
            CallError::Faulted(m) => write!(f, "device is faulted: {m}"),
        }
    }
}

/// The per-instance context behind `HostVtable::ctx`.
struct Ctx {
    device: String,
    /// The one pin this device's config names; anything else is refused.
    pin: Pin,
    claims: BTreeMap<Pin, Claim>,
    /// The hardware, set only for the duration of a call into the plugin.
    hw: Option<*mut dyn Hardware>,
    events: Vec<String>,
    timer_ops: Vec<TimerOp>,
    state: serde_json::Map<String, serde_json::Value>,
    error: Option<String>,
    /// The backend's own reason for the last hardware error in this call, so a device that
    /// fails because of it says why (`sitectl status`), not only that the hardware failed.
    hw_error: Option<String>,
}

impl Ctx {
    fn new(device: &str, pin: Pin) -> Self {
        Ctx {
            device: device.to_string(),
            pin,
            claims: BTreeMap::new(),
            hw: None,
            events: Vec::new(),
            timer_ops: Vec::new(),
            state: serde_json::Map::new(),
            error: None,
            hw_error: None,
        }
    }

    /// The plugin's error, with the backend's reason when the plugin only knew that the
    /// hardware failed.
    fn take_error(&mut self) -> Option<String> {
        let hw_error = self.hw_error.take();
        let message = self.error.take();
        match (message, hw_error) {
            // Only a message that says the hardware failed gets the backend's reason: one about
            // something else keeps its own words.
            (Some(m), Some(hw)) if m.contains("the hardware failed") => {
                Some(format!("{}: {hw}", m.replace(" (see the daemon log)", "")))
            }
            (None, Some(hw)) => Some(hw),
            (m, _) => m,
        }
    }

    fn hw(&mut self) -> Option<&mut dyn Hardware> {
        // SAFETY: `hw` is set from a live `&mut dyn Hardware` only while a call into the plugin
        // is in progress on this thread (see `Instance::call`), and cleared right after.
        self.hw.map(|p| unsafe { &mut *p })
    }

    fn hw_result<T>(&mut self, what: &str, r: Result<T, crate::hw::Error>) -> Result<T, i32> {
        r.map_err(|e| {
            log::error!("{}: {what}: {e}", self.device);
            self.hw_error = Some(e.to_string());
            abi::HOST_HW_ERROR
        })
    }

    /// May this device claim `pin`? Only its configured pin, and only once.
    fn may_claim(&self, pin: Pin) -> bool {
        if pin != self.pin || self.claims.contains_key(&pin) {
            log::warn!(
                "{}: refused to let it claim GPIO {pin}; its config names GPIO {}",
                self.device,
                self.pin
            );
            return false;
        }
        true
    }
}

thread_local! {
    /// The live instances' contexts by token, on the loop thread that created them. The host
    /// table's `ctx` is the token, not the address: a token is never reused, so a plugin that
    /// kept an old table (a `validate`'s, say) cannot reach another device's context at a
    /// reused address. A callback with an unknown token, or from any other thread (where this
    /// map is empty), is refused: the device model is single-threaded and the hardware is only
    /// lent for a call.
    static LIVE: std::cell::RefCell<HashMap<usize, *mut Ctx>> = Default::default();
}

/// The next context token (0 is never one).
static NEXT_TOKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Said once per process, so a plugin calling from its own thread cannot flood the log.
static STRAY_CALL_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes `ctx` reachable from callbacks on this thread; returns its token.
fn register(ctx: *mut Ctx) -> usize {
    let token = NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LIVE.with(|live| live.borrow_mut().insert(token, ctx));
    token
}

fn unregister(token: usize) {
    let _ = LIVE.try_with(|live| live.borrow_mut().remove(&token));
}

/// Runs a call into a plugin, which may unwind with a foreign exception (a C++ plugin): that
/// would leave the hardware lent to a dead call and run destructors that call the plugin
/// again, so sited aborts at once instead (the safe-state wiring covers what it leaves).
fn no_unwind<R>(f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            // Not reached for a foreign exception (catch_unwind aborts on one itself); a Rust
            // panic cannot cross the plugin's own guards, but if one did, the same holds.
            eprintln!("sited: a plugin unwound out of a call; aborting");
            std::process::abort()
        }
    }
}

/// Runs a host callback's body on its `Ctx`: only for a context this thread knows, and with a
/// panic in our own code contained (it would otherwise abort the daemon mid-edge, before any
/// output reached its safe level). `refused` is the answer in both cases.
fn with_ctx<R>(c: *mut c_void, what: &str, refused: R, f: impl FnOnce(&mut Ctx) -> R) -> R {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // try_with: a plugin thread calling during its own exit, after this thread-local is
        // gone, is refused like any other thread.
        let known = LIVE
            .try_with(|live| live.borrow().get(&(c as usize)).copied())
            .ok()
            .flatten();
        let Some(ctx) = known else {
            if !STRAY_CALL_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::error!(
                    "a plugin called the host's {what} from another thread or with an unknown context; refused (said once)"
                );
            }
            return None;
        };
        // SAFETY: a live Ctx of this thread (registered at creation, removed before it is
        // freed), and no other reference to it exists while the plugin is in a call.
        let ctx = unsafe { &mut *ctx };
        match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
            Ok(r) => Some(r),
            Err(payload) => {
                if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                    std::mem::forget(again);
                }
                log::error!(
                    "{}: sited failed inside {what} (a bug in sited); refused",
                    ctx.device
                );
                ctx.hw_error = Some(format!("sited failed inside {what}"));
                None
            }
        }
    }));
    match outcome {
        Ok(Some(r)) => r,
        Ok(None) => refused,
        Err(payload) => {
            std::mem::forget(payload);
            refused
        }
    }
}

/// A string from the plugin, or `None` (logged) when its pointer is bad. Invalid UTF-8 is
/// replaced, so a message still reaches the log.
///
/// # Safety
/// A non-null `s.ptr` must point to `s.len` bytes valid for the call.
unsafe fn text(device: &str, what: &str, s: StrRef) -> Option<String> {
    // SAFETY: the caller's contract; to_bytes refuses a null pointer with a length.
    match unsafe { s.to_bytes() } {
        Ok(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Err(e) => {
            log::warn!("{device}: refused the string the plugin passed to {what}: {e}");
            None
        }
    }
}

unsafe extern "C-unwind" fn cb_log(c: *mut c_void, level: u32, msg: StrRef) -> i32 {
    with_ctx(c, "log", abi::HOST_BAD_ARGUMENT, |c| {
        // SAFETY: a string borrowed for the call.
        let Some(msg) = (unsafe { text(&c.device, "log", msg) }) else {
            return abi::HOST_BAD_ARGUMENT;
        };
        match LogLevel::from_raw(level).unwrap_or(LogLevel::Info) {
            LogLevel::Error => log::error!("{}: {msg}", c.device),
            LogLevel::Warn => log::warn!("{}: {msg}", c.device),
            LogLevel::Info => log::info!("{}: {msg}", c.device),
            LogLevel::Debug => log::debug!("{}: {msg}", c.device),
        }
        abi::HOST_OK
    })
}

unsafe extern "C-unwind" fn cb_set_error(c: *mut c_void, msg: StrRef) -> i32 {
    with_ctx(c, "set_error", abi::HOST_BAD_ARGUMENT, |c| {
        // SAFETY: a string borrowed for the call.
        match unsafe { text(&c.device, "set_error", msg) } {
            Some(msg) => {
                c.error = Some(msg);
                abi::HOST_OK
            }
            None => abi::HOST_BAD_ARGUMENT,
        }
    })
}

unsafe extern "C-unwind" fn cb_now_us(c: *mut c_void) -> u64 {
    with_ctx(c, "now_us", 0, |_| monotonic_now().as_micros() as u64)
}

unsafe extern "C-unwind" fn cb_claim_input(c: *mut c_void, pin: u32, bias: u32, rest: u32) -> i32 {
    with_ctx(c, "claim_input", abi::HOST_BAD_ARGUMENT, |c| {
        let (Some(bias), Some(rest)) = (Bias::from_raw(bias), Level::from_raw(rest)) else {
            return abi::HOST_BAD_ARGUMENT;
        };
        if !c.may_claim(pin) {
            return abi::HOST_DENIED;
        }
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw
            .claim_input(pin, bias)
            .map(|()| hw.set_rest_level(pin, rest));
        match c.hw_result("claiming an input", r) {
            Ok(()) => {
                c.claims.insert(pin, Claim::Input);
                abi::HOST_OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_claim_output(c: *mut c_void, pin: u32, safe: u32) -> i32 {
    with_ctx(c, "claim_output", abi::HOST_BAD_ARGUMENT, |c| {
        let Some(safe) = Level::from_raw(safe) else {
            return abi::HOST_BAD_ARGUMENT;
        };
        if !c.may_claim(pin) {
            return abi::HOST_DENIED;
        }
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw.claim_output(pin, safe);
        match c.hw_result("claiming an output", r) {
            Ok(()) => {
                c.claims.insert(pin, Claim::Output { safe });
                abi::HOST_OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_claim_pwm(
    c: *mut c_void,
    pin: u32,
    chip: u32,
    channel: u32,
    period_ns: u64,
    safe_pulse_ns: u64,
) -> i32 {
    with_ctx(c, "claim_pwm", abi::HOST_BAD_ARGUMENT, |c| {
        if !c.may_claim(pin) {
            return abi::HOST_DENIED;
        }
        if period_ns == 0 || safe_pulse_ns > period_ns {
            return abi::HOST_BAD_ARGUMENT;
        }
        let spec = PwmSpec {
            chip: (chip != abi::PWM_NONE).then_some(chip),
            channel: (channel != abi::PWM_NONE).then_some(channel),
            period_ns,
            safe_pulse_ns,
        };
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw.claim_pwm(pin, spec);
        match c.hw_result("claiming PWM", r) {
            Ok(()) => {
                c.claims.insert(pin, Claim::Pwm { safe_pulse_ns });
                abi::HOST_OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_read_pin(c: *mut c_void, pin: u32, out: *mut u32) -> i32 {
    with_ctx(c, "read_pin", abi::HOST_BAD_ARGUMENT, |c| {
        if out.is_null() || !out.is_aligned() {
            return abi::HOST_BAD_ARGUMENT;
        }
        if !matches!(
            c.claims.get(&pin),
            Some(Claim::Input | Claim::Output { .. })
        ) {
            return abi::HOST_DENIED;
        }
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw.read(pin);
        match c.hw_result("reading", r) {
            Ok(level) => {
                // SAFETY: checked non-null and aligned; the plugin owns the u32 for the call.
                unsafe { *out = level.to_raw() };
                abi::HOST_OK
            }
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_write_pin(c: *mut c_void, pin: u32, level: u32) -> i32 {
    with_ctx(c, "write_pin", abi::HOST_BAD_ARGUMENT, |c| {
        let Some(level) = Level::from_raw(level) else {
            return abi::HOST_BAD_ARGUMENT;
        };
        if !matches!(c.claims.get(&pin), Some(Claim::Output { .. })) {
            return abi::HOST_DENIED;
        }
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw.write(pin, level);
        match c.hw_result("writing", r) {
            Ok(()) => abi::HOST_OK,
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_set_pwm(c: *mut c_void, pin: u32, pulse_ns: u64) -> i32 {
    with_ctx(c, "set_pwm", abi::HOST_BAD_ARGUMENT, |c| {
        if !matches!(c.claims.get(&pin), Some(Claim::Pwm { .. })) {
            return abi::HOST_DENIED;
        }
        let Some(hw) = c.hw() else {
            return abi::HOST_DENIED;
        };
        let r = hw.set_pwm(pin, pulse_ns);
        match c.hw_result("setting PWM", r) {
            Ok(()) => abi::HOST_OK,
            Err(code) => code,
        }
    })
}

unsafe extern "C-unwind" fn cb_arm_timer(c: *mut c_void, id: u64, after_us: u64) -> i32 {
    with_ctx(c, "arm_timer", abi::HOST_BAD_ARGUMENT, |c| {
        if c.hw.is_none() {
            return abi::HOST_DENIED;
        }
        c.timer_ops.push(TimerOp::Arm { id, after_us });
        abi::HOST_OK
    })
}

unsafe extern "C-unwind" fn cb_cancel_timer(c: *mut c_void, id: u64) -> i32 {
    with_ctx(c, "cancel_timer", abi::HOST_BAD_ARGUMENT, |c| {
        c.timer_ops.push(TimerOp::Cancel { id });
        abi::HOST_OK
    })
}

unsafe extern "C-unwind" fn cb_emit(c: *mut c_void, event: StrRef) -> i32 {
    with_ctx(c, "emit", abi::HOST_BAD_ARGUMENT, |c| {
        // SAFETY: a string borrowed for the call.
        match unsafe { text(&c.device, "emit", event) } {
            Some(event) => {
                c.events.push(event);
                abi::HOST_OK
            }
            None => abi::HOST_BAD_ARGUMENT,
        }
    })
}

unsafe extern "C-unwind" fn cb_set_state(c: *mut c_void, json: StrRef) -> i32 {
    with_ctx(c, "set_state", abi::HOST_BAD_ARGUMENT, |c| {
        // SAFETY: a string borrowed for the call.
        let Some(json) = (unsafe { text(&c.device, "set_state", json) }) else {
            return abi::HOST_BAD_ARGUMENT;
        };
        match serde_json::from_str::<serde_json::Value>(&json) {
            Ok(serde_json::Value::Object(map)) => {
                c.state = map;
                abi::HOST_OK
            }
            _ => {
                log::warn!(
                    "{}: ignored a state that is not a JSON object: {}",
                    c.device,
                    json.escape_debug()
                );
                abi::HOST_BAD_ARGUMENT
            }
        }
    })
}

/// The table for the context with `token`, labelled with the major version `lib` agreed on
/// and this host's minor version.
fn vtable(lib: &PluginLibrary, token: usize) -> HostVtable {
    HostVtable {
        size: std::mem::size_of::<HostVtable>() as u32,
        abi_version: lib.abi_version,
        // An integer token, not an address (see LIVE); plugins only pass it back.
        ctx: std::ptr::without_provenance_mut(token),
        log: cb_log,
        set_error: cb_set_error,
        now_us: cb_now_us,
        claim_input: cb_claim_input,
        claim_output: cb_claim_output,
        claim_pwm: cb_claim_pwm,
        read_pin: cb_read_pin,
        write_pin: cb_write_pin,
        set_pwm: cb_set_pwm,
        arm_timer: cb_arm_timer,
        cancel_timer: cb_cancel_timer,
        emit: cb_emit,
        set_state: cb_set_state,
        abi_minor: abi::ABI_MINOR,
        reserved: 0,
    }
}

/// Runs a plugin's `validate` on a device config without creating anything.
pub fn validate(
    lib: &PluginLibrary,
    device: &str,
    pin: Pin,
    config_json: &str,
) -> Result<(), String> {
    let ctx = Box::into_raw(Box::new(Ctx::new(device, pin)));
    let token = register(ctx);
    let vt = vtable(lib, token);
    // SAFETY: `vt` and `ctx` live across the call; the config string is borrowed for it.
    let status = no_unwind(|| unsafe { (lib.entry.validate)(&vt, StrRef::new(config_json)) });
    unregister(token);
    // SAFETY: `ctx` came from Box::into_raw above and nothing else holds it after the call.
    let ctx = unsafe { Box::from_raw(ctx) };
    match status {
        abi::STATUS_OK => Ok(()),
        _ => Err(ctx
            .error
            .unwrap_or_else(|| format!("the {} plugin rejected it", lib.kind))),
    }
}

/// A live device instance.
pub struct Instance {
    lib: Arc<PluginLibrary>,
    raw: *mut c_void,
    /// Owned via Box::into_raw so the plugin's callbacks are the only other users.
    ctx: *mut Ctx,
    /// How the callbacks find `ctx` (see LIVE).
    token: usize,
    vtable: *mut HostVtable,
}

impl Instance {
    /// Creates the device: the plugin claims its pin and drives outputs to their safe level.
    /// On failure every pin it claimed is set safe and released, so nothing is left half-done.
    pub fn create(
        lib: Arc<PluginLibrary>,
        device: &str,
        pin: Pin,
        config_json: &str,
        hw: &mut dyn Hardware,
    ) -> Result<Instance, Error> {
        let ctx = Box::into_raw(Box::new(Ctx::new(device, pin)));
        let token = register(ctx);
        let vtable = Box::into_raw(Box::new(vtable(&lib, token)));
        let mut raw: *mut c_void = std::ptr::null_mut();
        // SAFETY: ctx is ours; set the hardware for the duration of the call only.
        unsafe { (*ctx).hw = Some(hw as *mut dyn Hardware) };
        // SAFETY: vtable and ctx stay alive for the instance's life; `raw` is writable.
        let status =
            no_unwind(|| unsafe { (lib.entry.create)(vtable, StrRef::new(config_json), &mut raw) });
        // SAFETY: as above.
        unsafe { (*ctx).hw = None };
        let mut instance = Instance {
            lib,
            raw,
            ctx,
            token,
            vtable,
        };
        match status {
            abi::STATUS_OK if !raw.is_null() => Ok(instance),
            _ => {
                let message = instance
                    .ctx()
                    .take_error()
                    .unwrap_or_else(|| "create failed".into());
                instance.force_safe(hw);
                instance.release(hw);
                // An instance the failed create still handed out is destroyed when `instance`
                // drops, as the ABI promises; nothing else is called on it.
                if status == abi::STATUS_PANIC {
                    Err(Error::Panicked {
                        device: device.to_string(),
                        message,
                    })
                } else {
                    Err(Error::Refused {
                        device: device.to_string(),
                        message,
                    })
                }
            }
        }
    }

    fn ctx(&mut self) -> &mut Ctx {
        // SAFETY: `ctx` is live until Drop and no plugin call is in progress while we hold it.
        unsafe { &mut *self.ctx }
    }

    pub fn library(&self) -> &PluginLibrary {
        &self.lib
    }

    pub fn role(&self) -> Role {
        self.lib.role
    }

    /// The state the plugin last published.
    pub fn state(&self) -> &serde_json::Map<String, serde_json::Value> {
        // SAFETY: as `ctx()`, read-only.
        unsafe { &(*self.ctx).state }
    }

    /// The pins claimed and how.
    pub fn claims(&self) -> Vec<(Pin, Claim)> {
        // SAFETY: as `ctx()`, read-only.
        unsafe { (*self.ctx).claims.iter().map(|(p, c)| (*p, *c)).collect() }
    }

    /// Takes the events emitted since the last call.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ctx().events)
    }

    /// Takes the timer requests made since the last call.
    pub fn take_timer_ops(&mut self) -> Vec<TimerOp> {
        std::mem::take(&mut self.ctx().timer_ops)
    }

    fn call(
        &mut self,
        hw: Option<&mut dyn Hardware>,
        f: impl FnOnce(&EntryPoints, *mut c_void) -> i32,
    ) -> Result<(), CallError> {
        if self.raw.is_null() {
            return Err(CallError::Faulted("the instance is gone".into()));
        }
        let c = self.ctx();
        c.error = None;
        c.hw_error = None;
        c.hw = hw.map(|h| h as *mut dyn Hardware);
        let (entry, raw) = (&self.lib.entry, self.raw);
        let status = no_unwind(|| f(entry, raw));
        let c = self.ctx();
        c.hw = None;
        let message = c.take_error();
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_ERROR => Err(CallError::Refused(
                message.unwrap_or_else(|| "refused".into()),
            )),
            abi::STATUS_PANIC => Err(CallError::Panicked(
                message.unwrap_or_else(|| "plugin panicked".into()),
            )),
            other => Err(CallError::Panicked(format!(
                "plugin returned an unknown status {other}"
            ))),
        }
    }

    pub fn on_edge(
        &mut self,
        hw: &mut dyn Hardware,
        pin: Pin,
        level: Level,
        at_us: u64,
    ) -> Result<(), CallError> {
        // SAFETY: a live instance of this library; plain integers.
        self.call(Some(hw), |d, raw| unsafe {
            (d.on_edge)(raw, pin, level.to_raw(), at_us)
        })
    }

    pub fn on_timer(&mut self, hw: &mut dyn Hardware, id: u64) -> Result<(), CallError> {
        // SAFETY: a live instance of this library.
        self.call(Some(hw), |d, raw| unsafe { (d.on_timer)(raw, id) })
    }

    /// `{"set": value}`: an output command.
    pub fn command(&mut self, hw: &mut dyn Hardware, value: &str) -> Result<(), CallError> {
        let json = serde_json::json!({ "set": value }).to_string();
        // SAFETY: a live instance; the JSON string is borrowed for the call.
        self.call(Some(hw), |d, raw| unsafe {
            (d.command)(raw, StrRef::new(&json))
        })
    }

    /// Which pin level would make this input report `value`. Checked to be its own input pin.
    pub fn simulate(&mut self, value: &str) -> Result<(Pin, Level), CallError> {
        let json = serde_json::json!({ "sim": value }).to_string();
        let (mut pin, mut level) = (u32::MAX, u32::MAX);
        // SAFETY: a live instance; the JSON is borrowed and the out-pointers are ours.
        self.call(None, |d, raw| unsafe {
            (d.simulate)(raw, StrRef::new(&json), &mut pin, &mut level)
        })?;
        let level = Level::from_raw(level)
            .ok_or_else(|| CallError::Panicked("simulate returned no level".into()))?;
        if self.ctx().claims.get(&pin) != Some(&Claim::Input) {
            return Err(CallError::Panicked(format!(
                "simulate named GPIO {pin}, which is not this device's input"
            )));
        }
        Ok((pin, level))
    }

    /// Asks the plugin to go to its safe state.
    pub fn safe_state(&mut self, hw: &mut dyn Hardware) -> Result<(), CallError> {
        // SAFETY: a live instance of this library.
        self.call(Some(hw), |d, raw| unsafe { (d.safe_state)(raw) })
    }

    /// The host's own safe state, not trusting the plugin: every output at the level it was
    /// claimed with, every PWM at its safe pulse.
    pub fn force_safe(&mut self, hw: &mut dyn Hardware) {
        let device = self.ctx().device.clone();
        for (pin, claim) in self.claims() {
            let result = match claim {
                Claim::Input => Ok(()),
                Claim::Output { safe } => hw.write(pin, safe),
                Claim::Pwm { safe_pulse_ns } => hw.set_pwm(pin, safe_pulse_ns),
            };
            if let Err(e) = result {
                log::error!("{device}: could not put GPIO {pin} in its safe state: {e}");
            }
        }
    }

    /// Gives every claimed pin back to the backend.
    pub fn release(&mut self, hw: &mut dyn Hardware) {
        let pins: Vec<Pin> = self.ctx().claims.keys().copied().collect();
        for pin in pins {
            hw.release(pin);
        }
        self.ctx().claims.clear();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: a live instance, destroyed exactly once; destroy contains its own panics.
            no_unwind(|| unsafe { (self.lib.entry.destroy)(self.raw) });
        }
        unregister(self.token);
        // SAFETY: both came from Box::into_raw in `create` and the plugin no longer uses them.
        unsafe {
            drop(Box::from_raw(self.vtable));
            drop(Box::from_raw(self.ctx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardware_failure_carries_the_backends_reason() {
        let mut c = Ctx::new("exit_door", 13);
        let r: Result<(), i32> = c.hw_result(
            "claiming GPIO 13 for PWM",
            Err(crate::hw::Error::Pwm {
                pin: 13,
                chip: 0,
                channel: 1,
                detail: "channel in use by a kernel driver".into(),
            }),
        );
        assert_eq!(r, Err(abi::HOST_HW_ERROR));
        c.error = Some("claiming GPIO 13 for PWM: the hardware failed (see the daemon log)".into());
        assert_eq!(
            c.take_error().as_deref(),
            Some(
                "claiming GPIO 13 for PWM: the hardware failed: PWM 0/1 for GPIO 13: channel in use by a kernel driver"
            )
        );
        // Taken once; a failure without a hardware error keeps the plugin's words, and so does
        // one about something else even after a hardware error.
        c.error = Some("bad angle".into());
        assert_eq!(c.take_error().as_deref(), Some("bad angle"));
        c.hw_error = Some("PWM 0/1: busy".into());
        c.error = Some("bad angle".into());
        assert_eq!(c.take_error().as_deref(), Some("bad angle"));
    }
}
