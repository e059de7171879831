//! The C ABI between `sited` and a device plugin. Only C types cross: integers, raw pointers
//! and (ptr, len) strings borrowed for the duration of one call. Every struct starts with its
//! size and ABI version and only ever grows at the end, so a newer host can read an older
//! plugin's descriptor (PostgreSQL's `PG_MODULE_MAGIC`, mosquitto's version negotiation).

use std::ffi::c_void;

/// The first (and so far only) version of this ABI.
pub const ABI_V1: u32 = 1;
/// Every ABI version this build of the API crate speaks, newest first.
pub const SUPPORTED_ABI_VERSIONS: &[u32] = &[ABI_V1];

/// The one symbol every plugin exports (see [`QueryFn`]).
pub const QUERY_SYMBOL: &str = "sited_plugin_query";

/// `sited_plugin_query(host_versions, n)`: the host lists the ABI versions it speaks; the plugin
/// returns its descriptor for one of them, or null when it speaks none of them.
pub type QueryFn =
    unsafe extern "C" fn(host_versions: *const u32, n: usize) -> *const PluginDescriptor;

/// Status codes returned by plugin entry points.
pub const STATUS_OK: i32 = 0;
/// The plugin refused or failed; the message went through `HostVtable::set_error`.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked; the panic was caught at the boundary and its message went through
/// `HostVtable::set_error`. The host must not call the instance again except `destroy`.
pub const STATUS_PANIC: i32 = 2;

/// Status codes returned by host callbacks.
pub const HOST_OK: i32 = 0;
/// The pin is not one this device's configuration names, or was not claimed for this use.
pub const HOST_DENIED: i32 = 1;
/// The hardware backend failed; the host has logged the reason.
pub const HOST_HW_ERROR: i32 = 2;
/// An argument was out of range (unknown level, bias or log level, bad UTF-8).
pub const HOST_BAD_ARGUMENT: i32 = 3;

pub const LEVEL_LOW: u32 = 0;
pub const LEVEL_HIGH: u32 = 1;

pub const BIAS_OFF: u32 = 0;
pub const BIAS_PULL_UP: u32 = 1;
pub const BIAS_PULL_DOWN: u32 = 2;

pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;

/// `PluginDescriptor::role`: the device reads an input pin (`sitectl sim` applies).
pub const ROLE_INPUT: u32 = 1;
/// `PluginDescriptor::role`: the device drives an output (`sitectl set` applies).
pub const ROLE_OUTPUT: u32 = 2;

/// "No hardware PWM chip/channel configured": the backend uses software PWM and warns.
pub const PWM_NONE: u32 = u32::MAX;

/// A UTF-8 string borrowed for the duration of one call (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl StrRef {
    pub fn new(s: &str) -> Self {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows the string back.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`.
    pub unsafe fn to_str<'a>(self) -> Result<&'a str, std::str::Utf8Error> {
        if self.len == 0 {
            return Ok("");
        }
        // SAFETY: the caller guarantees ptr/len describe a live byte slice for 'a.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes)
    }
}

/// The callbacks the host gives each device instance. `ctx` identifies the instance to the
/// host; every callback takes it first. The table stays valid until the instance is destroyed.
#[repr(C)]
pub struct HostVtable {
    pub size: u32,
    pub abi_version: u32,
    pub ctx: *mut c_void,
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: StrRef),
    /// Sets the message that explains the `STATUS_ERROR`/`STATUS_PANIC` about to be returned.
    pub set_error: unsafe extern "C" fn(ctx: *mut c_void, msg: StrRef),
    /// Monotonic microseconds since the daemon started.
    pub now_us: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    /// Claims an input. `rest_level` is the level it shows when nothing acts on it (button
    /// released, door shut, switch off); real pins ignore it, simulated pins start there.
    pub claim_input:
        unsafe extern "C" fn(ctx: *mut c_void, pin: u32, bias: u32, rest_level: u32) -> i32,
    /// Claims an output and drives it to `safe_level`, the level the host restores whenever
    /// the device faults or the daemon stops.
    pub claim_output: unsafe extern "C" fn(ctx: *mut c_void, pin: u32, safe_level: u32) -> i32,
    /// Claims a PWM output (`chip`/`channel` = `PWM_NONE` for software PWM) and starts it at
    /// `safe_pulse_ns`, which the host restores on fault and at stop.
    pub claim_pwm: unsafe extern "C" fn(
        ctx: *mut c_void,
        pin: u32,
        chip: u32,
        channel: u32,
        period_ns: u64,
        safe_pulse_ns: u64,
    ) -> i32,
    pub read_pin: unsafe extern "C" fn(ctx: *mut c_void, pin: u32, level: *mut u32) -> i32,
    pub write_pin: unsafe extern "C" fn(ctx: *mut c_void, pin: u32, level: u32) -> i32,
    /// Sets the pulse width; 0 stops pulsing (the output idles low).
    pub set_pwm: unsafe extern "C" fn(ctx: *mut c_void, pin: u32, pulse_ns: u64) -> i32,
    /// Arms (or re-arms) the instance's timer `id` to fire `after_us` from now.
    pub arm_timer: unsafe extern "C" fn(ctx: *mut c_void, id: u64, after_us: u64) -> i32,
    pub cancel_timer: unsafe extern "C" fn(ctx: *mut c_void, id: u64) -> i32,
    /// A device event in the device vocabulary (`pressed`, `open`, `on`, ...).
    pub emit: unsafe extern "C" fn(ctx: *mut c_void, event: StrRef),
    /// The device's current state as a JSON object with at least `"state"`.
    pub set_state: unsafe extern "C" fn(ctx: *mut c_void, state_json: StrRef),
}

/// What a plugin exports, for one ABI version. Static for the life of the process.
#[repr(C)]
pub struct PluginDescriptor {
    pub size: u32,
    pub abi_version: u32,
    /// The device kind, as `kind = "..."` names it in the config.
    pub kind: StrRef,
    /// The plugin's own version (its crate version).
    pub version: StrRef,
    /// `ROLE_INPUT` or `ROLE_OUTPUT`.
    pub role: u32,
    /// Parses and checks a device config (JSON object) without creating anything.
    pub validate: unsafe extern "C" fn(host: *const HostVtable, config_json: StrRef) -> i32,
    /// Creates an instance; on success `*out` holds it until `destroy`.
    pub create: unsafe extern "C" fn(
        host: *const HostVtable,
        config_json: StrRef,
        out: *mut *mut c_void,
    ) -> i32,
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    pub on_edge:
        unsafe extern "C" fn(instance: *mut c_void, pin: u32, level: u32, at_us: u64) -> i32,
    pub on_timer: unsafe extern "C" fn(instance: *mut c_void, id: u64) -> i32,
    /// A command as JSON, `{"set": "<value>"}`.
    pub command: unsafe extern "C" fn(instance: *mut c_void, command_json: StrRef) -> i32,
    /// Input devices: which pin level would produce `value` (`{"sim": "<value>"}`), so the
    /// host can inject that edge into the simulated hardware.
    pub simulate: unsafe extern "C" fn(
        instance: *mut c_void,
        request_json: StrRef,
        pin: *mut u32,
        level: *mut u32,
    ) -> i32,
    /// Puts the device in its safe state (doors closed, siren and relays off).
    pub safe_state: unsafe extern "C" fn(instance: *mut c_void) -> i32,
}

// SAFETY: a descriptor only holds pointers to 'static strings and functions; it is never mutated.
unsafe impl Sync for PluginDescriptor {}
// SAFETY: as above; the host only reads it.
unsafe impl Send for PluginDescriptor {}

// Layout is part of the ABI: these fail the build if a field is inserted instead of appended.
const PTR: usize = std::mem::size_of::<usize>();
const _: () = assert!(std::mem::size_of::<StrRef>() == 2 * PTR);
const _: () = assert!(std::mem::size_of::<HostVtable>() == 8 + 14 * PTR);
const _: () = assert!(std::mem::size_of::<PluginDescriptor>() == 8 + 2 * 2 * PTR + PTR + 8 * PTR);
