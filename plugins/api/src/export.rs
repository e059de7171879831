//! The `extern "C"` trampolines behind [`crate::export_plugin!`]. Every entry point runs inside
//! `catch_unwind`, so a panic in a plugin becomes `STATUS_PANIC` plus a message, never an
//! unwind across the C boundary (gstreamer-rs's `plugin_define!` does the same).

use crate::abi::{self, HostVtable, PluginDescriptor, StrRef};
use crate::device::{Device, parse_config};
use crate::host::{Level, VtableHost};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

struct Instance<D> {
    host: VtableHost,
    device: D,
}

/// Builds the static descriptor for `D`. Used by the macro in a `static`.
pub const fn descriptor<D: Device>(version: &'static str) -> PluginDescriptor {
    PluginDescriptor {
        size: std::mem::size_of::<PluginDescriptor>() as u32,
        abi_version: abi::ABI_V1,
        kind: StrRef {
            ptr: D::KIND.as_ptr(),
            len: D::KIND.len(),
        },
        version: StrRef {
            ptr: version.as_ptr(),
            len: version.len(),
        },
        role: match D::ROLE {
            crate::device::Role::Input => abi::ROLE_INPUT,
            crate::device::Role::Output => abi::ROLE_OUTPUT,
        },
        validate: validate::<D>,
        create: create::<D>,
        destroy: destroy::<D>,
        on_edge: on_edge::<D>,
        on_timer: on_timer::<D>,
        command: command::<D>,
        simulate: simulate::<D>,
        safe_state: safe_state::<D>,
    }
}

/// The body of `sited_plugin_query`: picks ABI v1 if the host speaks it.
///
/// # Safety
/// `versions` must point to `n` readable `u32`s (or be null with `n == 0`).
pub unsafe fn query(
    versions: *const u32,
    n: usize,
    descriptor: &'static PluginDescriptor,
) -> *const PluginDescriptor {
    if versions.is_null() || n == 0 {
        return std::ptr::null();
    }
    // SAFETY: the caller guarantees `n` readable u32s.
    let offered = unsafe { std::slice::from_raw_parts(versions, n) };
    if offered.contains(&descriptor.abi_version) {
        descriptor
    } else {
        std::ptr::null()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Runs `f`, turning `Err` into `STATUS_ERROR` and a panic into `STATUS_PANIC`, each with its
/// message passed to the host.
fn guarded(host: &mut VtableHost, f: impl FnOnce(&mut VtableHost) -> Result<(), String>) -> i32 {
    match catch_unwind(AssertUnwindSafe(|| f(host))) {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(msg)) => {
            host.set_error(&msg);
            abi::STATUS_ERROR
        }
        Err(payload) => {
            let msg = format!("plugin panicked: {}", panic_message(payload.as_ref()));
            // set_error is host code and cannot panic back into us; guard it anyway so a
            // misbehaving host still cannot unwind through this frame.
            let _ = catch_unwind(AssertUnwindSafe(|| host.set_error(&msg)));
            abi::STATUS_PANIC
        }
    }
}

/// Is `host` a table this build understands?
///
/// # Safety
/// `host` must be null or point to at least the `size`/`abi_version` header.
unsafe fn host_table_ok(host: *const HostVtable) -> bool {
    if host.is_null() {
        return false;
    }
    // SAFETY: non-null and the caller guarantees the header is readable.
    let (size, version) = unsafe { ((*host).size as usize, (*host).abi_version) };
    size >= std::mem::size_of::<HostVtable>() && version == abi::ABI_V1
}

unsafe extern "C" fn validate<D: Device>(host: *const HostVtable, config_json: StrRef) -> i32 {
    // SAFETY: the host passes its table (checked below) and a borrowed config string.
    unsafe {
        if !host_table_ok(host) {
            return abi::STATUS_ERROR;
        }
        let mut vt = VtableHost::new(host);
        guarded(&mut vt, |_| {
            let text = config_json
                .to_str()
                .map_err(|e| format!("config is not UTF-8: {e}"))?;
            let config: D::Config = parse_config(text)?;
            D::check(&config)
        })
    }
}

unsafe extern "C" fn create<D: Device>(
    host: *const HostVtable,
    config_json: StrRef,
    out: *mut *mut c_void,
) -> i32 {
    // SAFETY: the host passes its table (checked below), a borrowed config string and a
    // writable out-pointer; the table outlives the instance by the ABI contract.
    unsafe {
        if !host_table_ok(host) || out.is_null() {
            return abi::STATUS_ERROR;
        }
        let mut vt = VtableHost::new(host);
        let mut made: Option<D> = None;
        let status = guarded(&mut vt, |h| {
            let text = config_json
                .to_str()
                .map_err(|e| format!("config is not UTF-8: {e}"))?;
            let config: D::Config = parse_config(text)?;
            D::check(&config)?;
            made = Some(D::create(h, config)?);
            Ok(())
        });
        match (status, made) {
            (abi::STATUS_OK, Some(device)) => {
                let instance = Box::new(Instance {
                    host: VtableHost::new(host),
                    device,
                });
                *out = Box::into_raw(instance).cast();
                abi::STATUS_OK
            }
            (abi::STATUS_OK, None) => abi::STATUS_ERROR,
            (status, _) => status,
        }
    }
}

/// # Safety
/// `instance` must come from `create::<D>` and not be destroyed yet.
unsafe fn instance<'a, D: Device>(instance: *mut c_void) -> &'a mut Instance<D> {
    // SAFETY: the caller's contract.
    unsafe { &mut *instance.cast::<Instance<D>>() }
}

unsafe extern "C" fn destroy<D: Device>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the host destroys each instance from `create::<D>` exactly once.
    let boxed = unsafe { Box::from_raw(instance.cast::<Instance<D>>()) };
    // A panicking Drop must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

unsafe extern "C" fn on_edge<D: Device>(
    inst: *mut c_void,
    pin: u32,
    level: u32,
    at_us: u64,
) -> i32 {
    // SAFETY: a live instance from `create::<D>`.
    let Instance { host, device } = unsafe { instance::<D>(inst) };
    guarded(host, |h| {
        let level = Level::from_raw(level)
            .ok_or_else(|| format!("the host sent an unknown level {level}"))?;
        device.on_edge(h, pin, level, at_us)
    })
}

unsafe extern "C" fn on_timer<D: Device>(inst: *mut c_void, id: u64) -> i32 {
    // SAFETY: a live instance from `create::<D>`.
    let Instance { host, device } = unsafe { instance::<D>(inst) };
    guarded(host, |h| device.on_timer(h, id))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCommand {
    set: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SimRequest {
    sim: String,
}

unsafe extern "C" fn command<D: Device>(inst: *mut c_void, command_json: StrRef) -> i32 {
    // SAFETY: a live instance from `create::<D>` and a string borrowed for the call.
    let (Instance { host, device }, text) = unsafe { (instance::<D>(inst), command_json.to_str()) };
    guarded(host, |h| {
        let text = text.map_err(|e| format!("command is not UTF-8: {e}"))?;
        let cmd: SetCommand =
            serde_json::from_str(text).map_err(|e| format!("malformed command: {e}"))?;
        device.command(h, &cmd.set)
    })
}

unsafe extern "C" fn simulate<D: Device>(
    inst: *mut c_void,
    request_json: StrRef,
    pin: *mut u32,
    level: *mut u32,
) -> i32 {
    // SAFETY: a live instance from `create::<D>`, a borrowed string, and writable out-pointers.
    unsafe {
        let Instance { host, device } = instance::<D>(inst);
        let text = request_json.to_str();
        let mut answer = None;
        let status = guarded(host, |_| {
            let text = text.map_err(|e| format!("request is not UTF-8: {e}"))?;
            let req: SimRequest =
                serde_json::from_str(text).map_err(|e| format!("malformed request: {e}"))?;
            answer = Some(device.simulate(&req.sim)?);
            Ok(())
        });
        if let (abi::STATUS_OK, Some((p, l))) = (status, answer)
            && !pin.is_null()
            && !level.is_null()
        {
            *pin = p;
            *level = l.to_raw();
        }
        status
    }
}

unsafe extern "C" fn safe_state<D: Device>(inst: *mut c_void) -> i32 {
    // SAFETY: a live instance from `create::<D>`.
    let Instance { host, device } = unsafe { instance::<D>(inst) };
    guarded(host, |h| device.safe_state(h))
}

/// Exports a [`Device`] implementation as a sited plugin: writes `sited_plugin_query` and the
/// static descriptor. Use once per cdylib: `site_plugin_api::export_plugin!(Button);`
#[macro_export]
macro_rules! export_plugin {
    ($device:ty) => {
        static SITED_PLUGIN_DESCRIPTOR: $crate::abi::PluginDescriptor =
            $crate::export::descriptor::<$device>(env!("CARGO_PKG_VERSION"));

        /// The plugin entry point the host looks up (see `site_plugin_api::abi::QueryFn`).
        ///
        /// # Safety
        /// `host_versions` must point to `n` readable `u32`s.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn sited_plugin_query(
            host_versions: *const u32,
            n: usize,
        ) -> *const $crate::abi::PluginDescriptor {
            // SAFETY: forwarded caller contract.
            unsafe { $crate::export::query(host_versions, n, &SITED_PLUGIN_DESCRIPTOR) }
        }
    };
}
