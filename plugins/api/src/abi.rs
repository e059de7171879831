//! The C ABI between `sited` and a device plugin. Only C types cross: integers, raw pointers
//! and (ptr, len) strings borrowed for the duration of one call. Every struct starts with its
//! size and ABI version and only ever grows at the end, so a newer host can read an older
//! plugin's descriptor (PostgreSQL's `PG_MODULE_MAGIC`, mosquitto's version negotiation).
//!
//! Versions: `abi_version` is the major version, which both sides must share. Minor versions
//! only append fields; a descriptor's `size` says which it has, and the host fills what an
//! older plugin's descriptor lacks with defaults (see [`PluginDescriptor`]). The C header
//! `plugins/api/include/sited_plugin.h` declares the same layout; a test compiles it against
//! the offsets below.
//!
//! - 1.0: the descriptor up to `safe_state`; `log`, `set_error`, `emit` and `set_state` are
//!   declared `void`.
//! - 1.1: the descriptor gains `abi_minor`, `flags` and `description`; the four callbacks above
//!   return a `HOST_*` status (a 1.0 plugin, which ignores it, works unchanged); entry points
//!   are `C-unwind`, so an exception from a C++ plugin is defined behaviour (sited aborts).

use std::ffi::c_void;

/// The major ABI version: a plugin must speak it exactly.
pub const ABI_V1: u32 = 1;
/// The minor version of [`ABI_V1`] this crate builds; older minors load too.
pub const ABI_MINOR: u32 = 1;
/// Every major ABI version this build of the API crate speaks, newest first.
pub const SUPPORTED_ABI_VERSIONS: &[u32] = &[ABI_V1];

/// The one symbol every plugin exports (see [`QueryFn`]).
pub const QUERY_SYMBOL: &str = "sited_plugin_query";

/// `sited_plugin_query(host_versions, n)`: the host lists the ABI versions it speaks; the plugin
/// returns its descriptor for one of them, or null when it speaks none of them.
pub type QueryFn =
    unsafe extern "C-unwind" fn(host_versions: *const u32, n: usize) -> *const PluginDescriptor;

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

/// A UTF-8 string borrowed for the duration of one call (not NUL-terminated). `ptr` may be
/// null only when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

/// Why a [`StrRef`] could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrError {
    /// A null pointer with a length, or a length no allocation can have.
    BadPointer,
    NotUtf8(std::str::Utf8Error),
}

impl std::fmt::Display for StrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrError::BadPointer => f.write_str("a null pointer with a non-zero length"),
            StrError::NotUtf8(e) => write!(f, "not UTF-8: {e}"),
        }
    }
}

impl std::error::Error for StrError {}

impl StrRef {
    pub const EMPTY: StrRef = StrRef {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub const fn new(s: &str) -> Self {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes, after the checks a pointer from the other side needs: null only when empty,
    /// and a length that fits an allocation.
    ///
    /// # Safety
    /// A non-null `ptr` must point to `len` readable bytes that stay valid and unchanged for
    /// `'a`.
    pub unsafe fn to_bytes<'a>(self) -> Result<&'a [u8], StrError> {
        if self.len == 0 {
            return Ok(&[]);
        }
        if self.ptr.is_null() || self.len > isize::MAX as usize {
            return Err(StrError::BadPointer);
        }
        // SAFETY: non-null, a length within isize::MAX, and the caller guarantees the bytes.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// Borrows the string back.
    ///
    /// # Safety
    /// As for [`StrRef::to_bytes`].
    pub unsafe fn to_str<'a>(self) -> Result<&'a str, StrError> {
        // SAFETY: the caller's contract.
        let bytes = unsafe { self.to_bytes() }?;
        std::str::from_utf8(bytes).map_err(StrError::NotUtf8)
    }
}

/// The host's callbacks (see [`HostVtable`]).
pub type LogFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, level: u32, msg: StrRef) -> i32;
pub type SetErrorFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, msg: StrRef) -> i32;
pub type NowUsFn = unsafe extern "C-unwind" fn(ctx: *mut c_void) -> u64;
pub type ClaimInputFn =
    unsafe extern "C-unwind" fn(ctx: *mut c_void, pin: u32, bias: u32, rest_level: u32) -> i32;
pub type ClaimOutputFn =
    unsafe extern "C-unwind" fn(ctx: *mut c_void, pin: u32, safe_level: u32) -> i32;
pub type ClaimPwmFn = unsafe extern "C-unwind" fn(
    ctx: *mut c_void,
    pin: u32,
    chip: u32,
    channel: u32,
    period_ns: u64,
    safe_pulse_ns: u64,
) -> i32;
pub type ReadPinFn =
    unsafe extern "C-unwind" fn(ctx: *mut c_void, pin: u32, level: *mut u32) -> i32;
pub type WritePinFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, pin: u32, level: u32) -> i32;
pub type SetPwmFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, pin: u32, pulse_ns: u64) -> i32;
pub type ArmTimerFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, id: u64, after_us: u64) -> i32;
pub type CancelTimerFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, id: u64) -> i32;
pub type EmitFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, event: StrRef) -> i32;
pub type SetStateFn = unsafe extern "C-unwind" fn(ctx: *mut c_void, state_json: StrRef) -> i32;

/// The callbacks the host gives each device instance. `ctx` identifies the instance to the
/// host; every callback takes it first. The table stays valid until the instance is destroyed.
/// The host checks every argument (a bad one gets `HOST_BAD_ARGUMENT`), answers only on the
/// thread that called into the plugin, and contains its own panics.
#[repr(C)]
pub struct HostVtable {
    pub size: u32,
    /// The major version the host and this plugin agreed on.
    pub abi_version: u32,
    pub ctx: *mut c_void,
    pub log: LogFn,
    /// Sets the message that explains the `STATUS_ERROR`/`STATUS_PANIC` about to be returned.
    pub set_error: SetErrorFn,
    /// Monotonic microseconds since the daemon started.
    pub now_us: NowUsFn,
    /// Claims an input. `rest_level` is the level it shows when nothing acts on it (button
    /// released, door shut, switch off); real pins ignore it, simulated pins start there.
    pub claim_input: ClaimInputFn,
    /// Claims an output and drives it to `safe_level`, the level the host restores whenever
    /// the device faults or the daemon stops.
    pub claim_output: ClaimOutputFn,
    /// Claims a PWM output (`chip`/`channel` = `PWM_NONE` for software PWM) and starts it at
    /// `safe_pulse_ns`, which the host restores on fault and at stop.
    pub claim_pwm: ClaimPwmFn,
    pub read_pin: ReadPinFn,
    pub write_pin: WritePinFn,
    /// Sets the pulse width; 0 stops pulsing (the output idles low).
    pub set_pwm: SetPwmFn,
    /// Arms (or re-arms) the instance's timer `id` to fire `after_us` from now.
    pub arm_timer: ArmTimerFn,
    pub cancel_timer: CancelTimerFn,
    /// A device event in the device vocabulary (`pressed`, `open`, `on`, ...).
    pub emit: EmitFn,
    /// The device's current state as a JSON object with at least `"state"`.
    pub set_state: SetStateFn,
    // ---- 1.1 ----
    /// The host's minor version. A 1.0 host's table ends before this field (its `size` says
    /// so), and its `log`, `set_error`, `emit` and `set_state` return nothing: a plugin that
    /// reads their status must first see `size` cover `abi_minor` and `abi_minor >= 1`.
    pub abi_minor: u32,
    /// Reserved; 0.
    pub reserved: u32,
}

/// The size of a 1.0 host table: up to and including `set_state`.
pub const HOST_V1_0_SIZE: usize =
    std::mem::offset_of!(HostVtable, set_state) + std::mem::size_of::<usize>();

/// The plugin's entry points (see [`PluginDescriptor`]).
pub type ValidateFn =
    unsafe extern "C-unwind" fn(host: *const HostVtable, config_json: StrRef) -> i32;
pub type CreateFn = unsafe extern "C-unwind" fn(
    host: *const HostVtable,
    config_json: StrRef,
    out: *mut *mut c_void,
) -> i32;
pub type DestroyFn = unsafe extern "C-unwind" fn(instance: *mut c_void);
pub type OnEdgeFn =
    unsafe extern "C-unwind" fn(instance: *mut c_void, pin: u32, level: u32, at_us: u64) -> i32;
pub type OnTimerFn = unsafe extern "C-unwind" fn(instance: *mut c_void, id: u64) -> i32;
pub type CommandFn =
    unsafe extern "C-unwind" fn(instance: *mut c_void, command_json: StrRef) -> i32;
pub type SimulateFn = unsafe extern "C-unwind" fn(
    instance: *mut c_void,
    request_json: StrRef,
    pin: *mut u32,
    level: *mut u32,
) -> i32;
pub type SafeStateFn = unsafe extern "C-unwind" fn(instance: *mut c_void) -> i32;

/// What a plugin exports, for one ABI version. Static for the life of the process.
///
/// The entry points are `Option`s because C can leave them null; the host refuses a plugin
/// that does at load. Fields after `safe_state` came with minor versions: a descriptor whose
/// `size` stops short of one gets its default (0, or an empty string).
#[repr(C)]
pub struct PluginDescriptor {
    pub size: u32,
    /// The major version, one of those the host offered.
    pub abi_version: u32,
    /// The device kind, as `kind = "..."` names it in the config.
    pub kind: StrRef,
    /// The plugin's own version (its crate version).
    pub version: StrRef,
    /// `ROLE_INPUT` or `ROLE_OUTPUT`.
    pub role: u32,
    /// Parses and checks a device config (JSON object) without creating anything.
    pub validate: Option<ValidateFn>,
    /// Creates an instance; on success `*out` holds it until `destroy`. If it fails but still
    /// set `*out`, the host calls `destroy` on it.
    pub create: Option<CreateFn>,
    pub destroy: Option<DestroyFn>,
    pub on_edge: Option<OnEdgeFn>,
    pub on_timer: Option<OnTimerFn>,
    /// A command as JSON, `{"set": "<value>"}`.
    pub command: Option<CommandFn>,
    /// Input devices: which pin level would produce `value` (`{"sim": "<value>"}`), so the
    /// host can inject that edge into the simulated hardware.
    pub simulate: Option<SimulateFn>,
    /// Puts the device in its safe state (doors closed, siren and relays off).
    pub safe_state: Option<SafeStateFn>,
    // ---- 1.1 ----
    /// The minor version the plugin was built against (0 for a 1.0 descriptor, which has no
    /// such field).
    pub abi_minor: u32,
    /// Reserved; 0.
    pub flags: u32,
    /// One line saying what the device is ("push button, debounced"), for the daemon log.
    pub description: StrRef,
}

/// The size of a 1.0 descriptor: up to and including `safe_state`.
pub const DESCRIPTOR_V1_0_SIZE: usize =
    std::mem::offset_of!(PluginDescriptor, safe_state) + std::mem::size_of::<usize>();

/// Reads the descriptor a plugin's query returned: its header through the raw pointer first
/// (nothing is assumed of a struct not yet sized), then as many bytes as its `size` says, at
/// most ours. What a shorter (older minor) descriptor lacks stays zero, which is each later
/// field's default. The error is a phrase for "plugin ... is incompatible: ...".
///
/// # Safety
/// `raw` must be non-null and point to at least the 8-byte header, and to `size` readable
/// bytes if the header says `size`.
pub unsafe fn read_descriptor(raw: *const PluginDescriptor) -> Result<PluginDescriptor, String> {
    if !raw.is_aligned() {
        return Err("its descriptor is misaligned".into());
    }
    // SAFETY: non-null and aligned; the header is readable by the caller's contract. Read
    // through the raw pointer, with no reference to the whole struct.
    let (size, version) = unsafe { ((*raw).size as usize, (*raw).abi_version) };
    if !SUPPORTED_ABI_VERSIONS.contains(&version) {
        return Err(format!(
            "it answered with ABI version {version} but sited speaks {SUPPORTED_ABI_VERSIONS:?}"
        ));
    }
    if size < DESCRIPTOR_V1_0_SIZE {
        return Err(format!(
            "its ABI v{version} descriptor is {size} bytes, shorter than ABI {version}.0's {DESCRIPTOR_V1_0_SIZE}"
        ));
    }
    let mut copy = std::mem::MaybeUninit::<PluginDescriptor>::zeroed();
    // Whole minor versions only: a size between two of them (a descriptor ending mid-field)
    // is read as the older one, never half a pointer.
    let take = if size >= std::mem::size_of::<PluginDescriptor>() {
        std::mem::size_of::<PluginDescriptor>()
    } else {
        DESCRIPTOR_V1_0_SIZE
    };
    // SAFETY: `take` bytes are readable at `raw` (its own size, by contract) and fit in `copy`.
    unsafe {
        std::ptr::copy_nonoverlapping(raw.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), take);
    }
    // SAFETY: all-zero bytes are a valid PluginDescriptor (integers, null pointers, `None`
    // entry points), and the copied prefix holds the plugin's own values of the same types.
    Ok(unsafe { copy.assume_init() })
}

// SAFETY: a descriptor only holds pointers to 'static strings and functions; it is never mutated.
unsafe impl Sync for PluginDescriptor {}
// SAFETY: as above; the host only reads it.
unsafe impl Send for PluginDescriptor {}

// Layout is part of the ABI: these fail the build if a field is inserted instead of appended,
// or changes size. The C header is checked against the same offsets (tests/e2e/plugin_abi.rs).
const PTR: usize = std::mem::size_of::<usize>();
macro_rules! at {
    ($t:ty, $f:ident, $off:expr) => {
        const _: () = assert!(std::mem::offset_of!($t, $f) == $off);
    };
}
const _: () = assert!(std::mem::size_of::<StrRef>() == 2 * PTR);
at!(StrRef, ptr, 0);
at!(StrRef, len, PTR);
const _: () = assert!(std::mem::size_of::<HostVtable>() == 16 + 14 * PTR);
const _: () = assert!(HOST_V1_0_SIZE == 8 + 14 * PTR);
at!(HostVtable, size, 0);
at!(HostVtable, abi_version, 4);
at!(HostVtable, ctx, 8);
at!(HostVtable, log, 8 + PTR);
at!(HostVtable, set_error, 8 + 2 * PTR);
at!(HostVtable, now_us, 8 + 3 * PTR);
at!(HostVtable, claim_input, 8 + 4 * PTR);
at!(HostVtable, claim_output, 8 + 5 * PTR);
at!(HostVtable, claim_pwm, 8 + 6 * PTR);
at!(HostVtable, read_pin, 8 + 7 * PTR);
at!(HostVtable, write_pin, 8 + 8 * PTR);
at!(HostVtable, set_pwm, 8 + 9 * PTR);
at!(HostVtable, arm_timer, 8 + 10 * PTR);
at!(HostVtable, cancel_timer, 8 + 11 * PTR);
at!(HostVtable, emit, 8 + 12 * PTR);
at!(HostVtable, set_state, 8 + 13 * PTR);
at!(HostVtable, abi_minor, 8 + 14 * PTR);
at!(HostVtable, reserved, 12 + 14 * PTR);
at!(PluginDescriptor, size, 0);
at!(PluginDescriptor, abi_version, 4);
at!(PluginDescriptor, kind, 8);
at!(PluginDescriptor, version, 8 + 2 * PTR);
at!(PluginDescriptor, role, 8 + 4 * PTR);
at!(PluginDescriptor, validate, 8 + 5 * PTR);
at!(PluginDescriptor, create, 8 + 6 * PTR);
at!(PluginDescriptor, destroy, 8 + 7 * PTR);
at!(PluginDescriptor, on_edge, 8 + 8 * PTR);
at!(PluginDescriptor, on_timer, 8 + 9 * PTR);
at!(PluginDescriptor, command, 8 + 10 * PTR);
at!(PluginDescriptor, simulate, 8 + 11 * PTR);
at!(PluginDescriptor, safe_state, 8 + 12 * PTR);
const _: () = assert!(DESCRIPTOR_V1_0_SIZE == 8 + 13 * PTR);
at!(PluginDescriptor, abi_minor, 8 + 13 * PTR);
at!(PluginDescriptor, flags, 12 + 13 * PTR);
at!(PluginDescriptor, description, 16 + 13 * PTR);
const _: () = assert!(std::mem::size_of::<PluginDescriptor>() == 16 + 15 * PTR);

#[cfg(test)]
mod tests {
    use super::*;

    /// An ABI 1.0 descriptor as a 1.0 plugin lays it out: no minor, flags or description.
    #[repr(C)]
    struct DescriptorV1_0 {
        size: u32,
        abi_version: u32,
        kind: StrRef,
        version: StrRef,
        role: u32,
        entry_points: [Option<SafeStateFn>; 8],
    }

    unsafe extern "C-unwind" fn safe(_: *mut c_void) -> i32 {
        STATUS_OK
    }

    fn v1_0(size: usize) -> DescriptorV1_0 {
        DescriptorV1_0 {
            size: size as u32,
            abi_version: ABI_V1,
            kind: StrRef::new("old"),
            version: StrRef::new("0.1"),
            role: ROLE_OUTPUT,
            entry_points: [Some(safe); 8],
        }
    }

    #[test]
    fn a_1_0_descriptor_reads_with_defaults_for_what_it_lacks() {
        assert_eq!(std::mem::size_of::<DescriptorV1_0>(), DESCRIPTOR_V1_0_SIZE);
        let old = v1_0(DESCRIPTOR_V1_0_SIZE);
        // Heap-allocated so that Miri catches any read past it.
        let boxed = Box::new(old);
        // SAFETY: a readable descriptor of the size it says.
        let read = unsafe { read_descriptor(std::ptr::from_ref(&*boxed).cast()) }.expect("read");
        assert_eq!(read.size as usize, DESCRIPTOR_V1_0_SIZE);
        assert_eq!(read.role, ROLE_OUTPUT);
        assert!(read.safe_state.is_some() && read.validate.is_some());
        assert_eq!((read.abi_minor, read.flags), (0, 0));
        // SAFETY: defaults are empty strings; kind is a static str.
        unsafe {
            assert_eq!(read.description.to_str(), Ok(""));
            assert_eq!(read.kind.to_str(), Ok("old"));
        }
    }

    #[test]
    fn a_descriptor_shorter_than_1_0_or_of_another_major_is_refused() {
        let short = Box::new(v1_0(DESCRIPTOR_V1_0_SIZE - 8));
        // SAFETY: readable; the size it claims is within the allocation.
        let e = unsafe { read_descriptor(std::ptr::from_ref(&*short).cast()) }.err();
        assert!(e.expect("refused").contains("shorter than ABI 1.0's"));
        // A size between 1.0's and 1.1's (past abi_minor, mid-description): read as 1.0.
        #[repr(C)]
        struct Longer {
            v1_0: DescriptorV1_0,
            extra: [u8; 12],
        }
        let mut longer = Box::new(Longer {
            v1_0: v1_0(DESCRIPTOR_V1_0_SIZE + 12),
            extra: [0xff; 12],
        });
        longer.v1_0.size = (DESCRIPTOR_V1_0_SIZE + 12) as u32;
        // SAFETY: readable for the size it says.
        let read = unsafe { read_descriptor(std::ptr::from_ref(&*longer).cast()) }.expect("read");
        assert_eq!(
            (read.abi_minor, read.description.len),
            (0, 0),
            "nothing past 1.0"
        );
        let mut other = Box::new(v1_0(DESCRIPTOR_V1_0_SIZE));
        other.abi_version = 2;
        // SAFETY: as above.
        let e = unsafe { read_descriptor(std::ptr::from_ref(&*other).cast()) }.err();
        assert!(e.expect("refused").contains("ABI version 2"));
    }
}
