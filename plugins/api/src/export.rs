//! The `extern "C-unwind"` trampolines behind [`crate::export_plugin!`]. Every entry point runs inside
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
        kind: StrRef::new(D::KIND),
        version: StrRef::new(version),
        role: match D::ROLE {
            crate::device::Role::Input => abi::ROLE_INPUT,
            crate::device::Role::Output => abi::ROLE_OUTPUT,
        },
        validate: Some(validate::<D>),
        create: Some(create::<D>),
        destroy: Some(destroy::<D>),
        on_edge: Some(on_edge::<D>),
        on_timer: Some(on_timer::<D>),
        command: Some(command::<D>),
        simulate: Some(simulate::<D>),
        safe_state: Some(safe_state::<D>),
        abi_minor: abi::ABI_MINOR,
        flags: 0,
        description: StrRef::new(D::DESCRIPTION),
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

/// Drops a panic payload without letting a panicking `Drop` of it unwind: the payload of
/// that panic is dropped the same way, and after a few rounds forgotten (a leak beats an
/// abort mid-edge).
fn drop_payload(mut payload: Box<dyn std::any::Any + Send>) {
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
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
            drop_payload(payload);
            // set_error is host code and contains its own panics; guard it anyway so a
            // misbehaving host still cannot unwind through this frame.
            if let Err(again) = catch_unwind(AssertUnwindSafe(|| host.set_error(&msg))) {
                drop_payload(again);
            }
            abi::STATUS_PANIC
        }
    }
}

/// Is `host` a table this build understands? If not, and the table is readable enough to say
/// so, its `set_error` hears why.
///
/// # Safety
/// `host` must be null or point to at least the `size`/`abi_version` header, and to as many
/// bytes as `size` says.
unsafe fn host_table_ok(host: *const HostVtable) -> bool {
    if host.is_null() || !host.is_aligned() {
        return false;
    }
    // SAFETY: non-null, aligned, and the caller guarantees the header is readable; the fields
    // are read through the raw pointer, so nothing is assumed about the rest yet.
    let (size, version) = unsafe { ((*host).size as usize, (*host).abi_version) };
    if size >= std::mem::size_of::<HostVtable>() && version == abi::ABI_V1 {
        return true;
    }
    let has_set_error = size >= std::mem::offset_of!(HostVtable, set_error) + size_of::<usize>();
    if has_set_error {
        let msg = format!(
            "this plugin speaks ABI {}.{} and needs a {}-byte host table; the host's is ABI {version}, {size} bytes",
            abi::ABI_V1,
            abi::ABI_MINOR,
            std::mem::size_of::<HostVtable>()
        );
        // SAFETY: the table holds ctx and set_error (by its size); msg is borrowed for the call.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| unsafe {
            ((*host).set_error)((*host).ctx, StrRef::new(&msg))
        })) {
            drop_payload(payload);
        }
    }
    false
}

unsafe extern "C-unwind" fn validate<D: Device>(
    host: *const HostVtable,
    config_json: StrRef,
) -> i32 {
    // SAFETY: the host passes its table (checked below) and a borrowed config string.
    unsafe {
        if !host_table_ok(host) {
            return abi::STATUS_ERROR;
        }
        let mut vt = VtableHost::new(host);
        guarded(&mut vt, |_| {
            let text = config_json
                .to_str()
                .map_err(|e| format!("the config string is {e}"))?;
            let config: D::Config = parse_config(text)?;
            D::check(&config)
        })
    }
}

unsafe extern "C-unwind" fn create<D: Device>(
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
                .map_err(|e| format!("the config string is {e}"))?;
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

unsafe extern "C-unwind" fn destroy<D: Device>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the host destroys each instance from `create::<D>` exactly once.
    let boxed = unsafe { Box::from_raw(instance.cast::<Instance<D>>()) };
    // A panicking Drop must not unwind into the host, nor may its payload's.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(boxed))) {
        drop_payload(payload);
    }
}

unsafe extern "C-unwind" fn on_edge<D: Device>(
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

unsafe extern "C-unwind" fn on_timer<D: Device>(inst: *mut c_void, id: u64) -> i32 {
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

unsafe extern "C-unwind" fn command<D: Device>(inst: *mut c_void, command_json: StrRef) -> i32 {
    // SAFETY: a live instance from `create::<D>` and a string borrowed for the call.
    let (Instance { host, device }, text) = unsafe { (instance::<D>(inst), command_json.to_str()) };
    guarded(host, |h| {
        let text = text.map_err(|e| format!("the command string is {e}"))?;
        let cmd: SetCommand =
            serde_json::from_str(text).map_err(|e| format!("malformed command: {e}"))?;
        device.command(h, &cmd.set)
    })
}

unsafe extern "C-unwind" fn simulate<D: Device>(
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
            let text = text.map_err(|e| format!("the request string is {e}"))?;
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

unsafe extern "C-unwind" fn safe_state<D: Device>(inst: *mut c_void) -> i32 {
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
        pub unsafe extern "C-unwind" fn sited_plugin_query(
            host_versions: *const u32,
            n: usize,
        ) -> *const $crate::abi::PluginDescriptor {
            // SAFETY: forwarded caller contract.
            unsafe { $crate::export::query(host_versions, n, &SITED_PLUGIN_DESCRIPTOR) }
        }
    };
}

/// The plugin side of the boundary, driven through the descriptor as a host drives it: with a
/// C callback table, raw pointers and the C entry points. CI runs these under Miri too
/// (`cargo +nightly miri test -p site-plugin-api boundary`), which checks the pointer work.
#[cfg(test)]
mod boundary {
    use super::*;
    use crate::device::Role;
    use crate::host::Host;
    use std::cell::RefCell;

    /// What the test host heard, behind `HostVtable::ctx`.
    #[derive(Default)]
    struct Heard {
        errors: Vec<String>,
        states: Vec<String>,
    }

    unsafe extern "C-unwind" fn log(_: *mut c_void, _: u32, _: StrRef) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn set_error(ctx: *mut c_void, msg: StrRef) -> i32 {
        // SAFETY: ctx is the test's RefCell<Heard>; msg is valid for the call.
        let (heard, msg) = unsafe { (&*ctx.cast::<RefCell<Heard>>(), msg.to_str()) };
        heard
            .borrow_mut()
            .errors
            .push(msg.unwrap_or("?").to_string());
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn now_us(_: *mut c_void) -> u64 {
        7
    }
    unsafe extern "C-unwind" fn claim_input(_: *mut c_void, _: u32, _: u32, _: u32) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn claim_output(_: *mut c_void, _: u32, _: u32) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn claim_pwm(
        _: *mut c_void,
        _: u32,
        _: u32,
        _: u32,
        _: u64,
        _: u64,
    ) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn read_pin(_: *mut c_void, _: u32, level: *mut u32) -> i32 {
        // SAFETY: the plugin passes a writable u32.
        unsafe { *level = abi::LEVEL_HIGH };
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn write_pin(_: *mut c_void, _: u32, _: u32) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn set_pwm(_: *mut c_void, _: u32, _: u64) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn arm_timer(_: *mut c_void, _: u64, _: u64) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn cancel_timer(_: *mut c_void, _: u64) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn emit(_: *mut c_void, _: StrRef) -> i32 {
        abi::HOST_OK
    }
    unsafe extern "C-unwind" fn set_state(ctx: *mut c_void, json: StrRef) -> i32 {
        // SAFETY: as set_error.
        let (heard, json) = unsafe { (&*ctx.cast::<RefCell<Heard>>(), json.to_str()) };
        heard
            .borrow_mut()
            .states
            .push(json.unwrap_or("?").to_string());
        abi::HOST_OK
    }

    fn table(heard: &RefCell<Heard>) -> HostVtable {
        HostVtable {
            size: std::mem::size_of::<HostVtable>() as u32,
            abi_version: abi::ABI_V1,
            ctx: std::ptr::from_ref(heard).cast_mut().cast(),
            log,
            set_error,
            now_us,
            claim_input,
            claim_output,
            claim_pwm,
            read_pin,
            write_pin,
            set_pwm,
            arm_timer,
            cancel_timer,
            emit,
            set_state,
            abi_minor: abi::ABI_MINOR,
            reserved: 0,
        }
    }

    /// A payload whose own `Drop` panics: dropping it outside `catch_unwind` aborts.
    struct Vicious;
    impl Drop for Vicious {
        fn drop(&mut self) {
            panic!("and its payload's Drop panics too");
        }
    }

    /// A device that misbehaves in the ways a plugin author can get wrong.
    struct Trouble {
        vicious_on_drop: bool,
    }
    impl Drop for Trouble {
        fn drop(&mut self) {
            if self.vicious_on_drop {
                std::panic::panic_any(Vicious);
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct TroubleConfig {
        pin: u32,
    }
    impl Device for Trouble {
        const KIND: &'static str = "trouble";
        const ROLE: Role = Role::Input;
        const DESCRIPTION: &'static str = "misbehaves";
        type Config = TroubleConfig;
        fn create(host: &mut dyn Host, config: TroubleConfig) -> Result<Self, String> {
            host.claim_input(config.pin, crate::Bias::PullUp, Level::High)
                .map_err(|e| e.to_string())?;
            host.set_state(&serde_json::json!({"state": "ready"}));
            Ok(Trouble {
                vicious_on_drop: false,
            })
        }
        fn on_edge(&mut self, _: &mut dyn Host, _: u32, _: Level, _: u64) -> Result<(), String> {
            std::panic::panic_any(Vicious)
        }
        fn on_timer(&mut self, _: &mut dyn Host, _: u64) -> Result<(), String> {
            self.vicious_on_drop = true;
            Ok(())
        }
        fn safe_state(&mut self, _: &mut dyn Host) -> Result<(), String> {
            Ok(())
        }
    }

    static DESCRIPTOR: PluginDescriptor = descriptor::<Trouble>("9.9.9");

    fn create_trouble(vt: &HostVtable) -> *mut c_void {
        let mut out = std::ptr::null_mut();
        // SAFETY: a valid table and config; `out` is writable.
        let status = unsafe {
            (DESCRIPTOR.create.expect("create"))(vt, StrRef::new(r#"{"pin": 4}"#), &mut out)
        };
        assert_eq!(status, abi::STATUS_OK);
        assert!(!out.is_null());
        out
    }

    #[test]
    fn the_descriptor_is_complete_and_labelled_with_this_minor_version() {
        assert_eq!(DESCRIPTOR.abi_minor, abi::ABI_MINOR);
        assert_eq!(
            DESCRIPTOR.size as usize,
            std::mem::size_of::<PluginDescriptor>()
        );
        // SAFETY: static strings.
        let description = unsafe { DESCRIPTOR.description.to_str() };
        assert_eq!(description, Ok("misbehaves"));
        assert!(DESCRIPTOR.validate.is_some() && DESCRIPTOR.safe_state.is_some());
    }

    #[test]
    fn query_answers_only_a_host_that_speaks_our_major_version() {
        let ours = [abi::ABI_V1];
        let other = [abi::ABI_V1 + 1];
        // SAFETY: valid slices, or null with 0.
        unsafe {
            assert!(!query(ours.as_ptr(), 1, &DESCRIPTOR).is_null());
            assert!(query(other.as_ptr(), 1, &DESCRIPTOR).is_null());
            assert!(query(std::ptr::null(), 0, &DESCRIPTOR).is_null());
        }
    }

    #[test]
    fn a_panic_whose_payload_panics_on_drop_is_contained() {
        let heard = RefCell::new(Heard::default());
        let vt = table(&heard);
        let instance = create_trouble(&vt);
        // SAFETY: a live instance.
        let status = unsafe { (DESCRIPTOR.on_edge.expect("on_edge"))(instance, 4, 1, 0) };
        assert_eq!(status, abi::STATUS_PANIC);
        assert_eq!(
            heard.borrow().errors.last().map(String::as_str),
            Some("plugin panicked: a panic with a non-text payload")
        );
        // SAFETY: destroyed once.
        unsafe { (DESCRIPTOR.destroy.expect("destroy"))(instance) };
    }

    #[test]
    fn a_device_whose_drop_panics_with_a_vicious_payload_is_destroyed_quietly() {
        let heard = RefCell::new(Heard::default());
        let vt = table(&heard);
        let instance = create_trouble(&vt);
        // SAFETY: a live instance; on_timer arms the panicking Drop.
        unsafe {
            assert_eq!(
                (DESCRIPTOR.on_timer.expect("on_timer"))(instance, 1),
                abi::STATUS_OK
            );
            (DESCRIPTOR.destroy.expect("destroy"))(instance);
        }
        assert_eq!(heard.borrow().states, [r#"{"state":"ready"}"#]);
    }

    #[test]
    fn a_host_table_too_short_or_of_another_version_is_refused_with_a_reason() {
        let heard = RefCell::new(Heard::default());
        let mut vt = table(&heard);
        vt.abi_version = abi::ABI_V1 + 1;
        let mut out = std::ptr::null_mut();
        // SAFETY: a readable table (of the wrong version); `out` is writable.
        let status = unsafe {
            (DESCRIPTOR.create.expect("create"))(&vt, StrRef::new(r#"{"pin": 4}"#), &mut out)
        };
        assert_eq!(status, abi::STATUS_ERROR);
        assert!(out.is_null());
        let errors = &heard.borrow().errors;
        assert!(
            errors.iter().any(|e| e.contains("the host's is ABI 2")),
            "{errors:?}"
        );
        // SAFETY: null is refused before anything is read.
        let status = unsafe {
            (DESCRIPTOR.validate.expect("validate"))(std::ptr::null(), StrRef::new("{}"))
        };
        assert_eq!(status, abi::STATUS_ERROR);
    }

    #[test]
    fn a_null_string_with_a_length_is_an_error_not_a_read() {
        let heard = RefCell::new(Heard::default());
        let vt = table(&heard);
        let bad = StrRef {
            ptr: std::ptr::null(),
            len: 5,
        };
        // SAFETY: the point: the pointer is null with a length, which to_bytes refuses.
        unsafe {
            assert_eq!(bad.to_bytes(), Err(abi::StrError::BadPointer));
            assert_eq!(StrRef::EMPTY.to_str(), Ok(""));
            assert_eq!(
                (DESCRIPTOR.validate.expect("validate"))(&vt, bad),
                abi::STATUS_ERROR
            );
        }
        assert_eq!(
            heard.borrow().errors.last().map(String::as_str),
            Some("the config string is a null pointer with a non-zero length")
        );
    }
}
