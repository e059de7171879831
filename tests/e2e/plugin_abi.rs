//! The plugin ABI as a public contract: the C header against the Rust layout, C plugins built
//! by the test suite (tests/build.rs) and driven through a real sited, a plugin built against
//! the previous minor version, and the boundary holding against plugins that pass null
//! pointers, call from their own threads, leave entry points null or fail `create` with an
//! instance in hand; and the trust check refusing plugins an outsider could have swapped.

use site_plugin_api::abi::{self, HostVtable, PluginDescriptor, StrRef};
use site_tests::*;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const BUZZER: &str = "[[device]]\nname = \"buzzer\"\nkind = \"buzzer\"\npin = 6\n";

/// One of the plugin directories tests/build.rs filled.
fn c_plugins(dir: &str) -> PathBuf {
    Path::new(env!("SITED_C_PLUGINS")).join(dir)
}

fn write_config(site: &SiteDir, plugins: &Path, devices: &str) -> PathBuf {
    let path = site.config_path();
    std::fs::write(
        &path,
        format!("{}{devices}", site.header_with_plugins(plugins)),
    )
    .expect("write config");
    path
}

fn check_config(path: &Path) -> (bool, String) {
    let out = program(sited_bin())
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("run sited");
    let (_, stderr) = text(&out);
    (out.status.success(), stderr)
}

/// The C compiler the C plugins were built with, on `file`, checking syntax only.
fn compile_c(file: &Path, defines: &[&str]) -> (bool, String) {
    let mut cmd = c_compiler();
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
        .arg("-I")
        .arg(env!("SITED_PLUGIN_INCLUDE"))
        .args(defines)
        .arg(file);
    let out = cmd.output().expect("run the C compiler");
    (out.status.success(), text(&out).1)
}

/// `_Static_assert`s of every field's offset and every struct's size, from the Rust types.
fn layout_asserts(minor: u32) -> String {
    let p = size_of::<usize>();
    let mut lines = vec![
        "#include <stddef.h>".to_string(),
        "#include <sited_plugin.h>".to_string(),
    ];
    let mut at = |c_type: &str, field: &str, offset: usize| {
        lines.push(format!(
            "_Static_assert(offsetof({c_type}, {field}) == {offset}, \"{c_type}.{field} is at {offset} in Rust\");"
        ));
    };
    at("sited_str", "ptr", offset_of!(StrRef, ptr));
    at("sited_str", "len", offset_of!(StrRef, len));
    macro_rules! host {
        ($($f:ident),*) => { $( at("sited_host", stringify!($f), offset_of!(HostVtable, $f)); )* };
    }
    host!(
        size,
        abi_version,
        ctx,
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
        set_state
    );
    macro_rules! descriptor {
        ($($f:ident),*) => {
            $( at("sited_plugin_descriptor", stringify!($f), offset_of!(PluginDescriptor, $f)); )*
        };
    }
    descriptor!(
        size,
        abi_version,
        kind,
        version,
        role,
        validate,
        create,
        destroy,
        on_edge,
        on_timer,
        command,
        simulate,
        safe_state
    );
    let (descriptor_size, host_size) = if minor >= 1 {
        descriptor!(abi_minor, flags, description);
        host!(abi_minor, reserved);
        (size_of::<PluginDescriptor>(), size_of::<HostVtable>())
    } else {
        (abi::DESCRIPTOR_V1_0_SIZE, abi::HOST_V1_0_SIZE)
    };
    for (c_type, size) in [
        ("sited_str", size_of::<StrRef>()),
        ("sited_host", host_size),
        ("sited_plugin_descriptor", descriptor_size),
        ("void *", p),
    ] {
        lines.push(format!(
            "_Static_assert(sizeof({c_type}) == {size}, \"sizeof({c_type}) is {size} in Rust\");"
        ));
    }
    for (name, value) in [
        ("SITED_PLUGIN_ABI_VERSION", abi::ABI_V1),
        ("SITED_LEVEL_HIGH", abi::LEVEL_HIGH),
        ("SITED_BIAS_PULL_DOWN", abi::BIAS_PULL_DOWN),
        ("SITED_LOG_DEBUG", abi::LOG_DEBUG),
        ("SITED_ROLE_OUTPUT", abi::ROLE_OUTPUT),
        ("SITED_PWM_NONE", abi::PWM_NONE),
    ] {
        lines.push(format!(
            "_Static_assert({name} == {value}u, \"{name} is {value} in Rust\");"
        ));
    }
    for (name, value) in [
        ("SITED_STATUS_PANIC", abi::STATUS_PANIC),
        ("SITED_HOST_BAD_ARGUMENT", abi::HOST_BAD_ARGUMENT),
        ("SITED_HOST_HW_ERROR", abi::HOST_HW_ERROR),
    ] {
        lines.push(format!(
            "_Static_assert({name} == {value}, \"{name} is {value} in Rust\");"
        ));
    }
    lines.push(format!(
        "_Static_assert(SITED_PLUGIN_ABI_MINOR == {minor}, \"built against {minor}\");"
    ));
    // The signatures, as abi.rs declares them: assigning each field to a pointer of that type
    // is an error under -Werror unless the header declares the same one.
    let ret = if minor >= 1 { "int32_t" } else { "void" };
    lines.push("void signatures(sited_plugin_descriptor *d, sited_host *h);".into());
    lines.push("void signatures(sited_plugin_descriptor *d, sited_host *h) {".into());
    for (field, signature) in [
        ("log", format!("{ret} (*)(void *, uint32_t, sited_str)")),
        ("set_error", format!("{ret} (*)(void *, sited_str)")),
        ("now_us", "uint64_t (*)(void *)".into()),
        (
            "claim_input",
            "int32_t (*)(void *, uint32_t, uint32_t, uint32_t)".into(),
        ),
        (
            "claim_output",
            "int32_t (*)(void *, uint32_t, uint32_t)".into(),
        ),
        (
            "claim_pwm",
            "int32_t (*)(void *, uint32_t, uint32_t, uint32_t, uint64_t, uint64_t)".into(),
        ),
        (
            "read_pin",
            "int32_t (*)(void *, uint32_t, uint32_t *)".into(),
        ),
        (
            "write_pin",
            "int32_t (*)(void *, uint32_t, uint32_t)".into(),
        ),
        ("set_pwm", "int32_t (*)(void *, uint32_t, uint64_t)".into()),
        (
            "arm_timer",
            "int32_t (*)(void *, uint64_t, uint64_t)".into(),
        ),
        ("cancel_timer", "int32_t (*)(void *, uint64_t)".into()),
        ("emit", format!("{ret} (*)(void *, sited_str)")),
        ("set_state", format!("{ret} (*)(void *, sited_str)")),
    ] {
        let var = signature.replacen("(*)", &format!("(*host_{field})"), 1);
        lines.push(format!("    {var} = h->{field}; (void)host_{field};"));
    }
    for (field, signature) in [
        ("validate", "int32_t (*)(const sited_host *, sited_str)"),
        (
            "create",
            "int32_t (*)(const sited_host *, sited_str, void **)",
        ),
        ("destroy", "void (*)(void *)"),
        (
            "on_edge",
            "int32_t (*)(void *, uint32_t, uint32_t, uint64_t)",
        ),
        ("on_timer", "int32_t (*)(void *, uint64_t)"),
        ("command", "int32_t (*)(void *, sited_str)"),
        (
            "simulate",
            "int32_t (*)(void *, sited_str, uint32_t *, uint32_t *)",
        ),
        ("safe_state", "int32_t (*)(void *)"),
    ] {
        let var = signature.replacen("(*)", &format!("(*plugin_{field})"), 1);
        lines.push(format!("    {var} = d->{field}; (void)plugin_{field};"));
    }
    lines.push(
        "    const sited_plugin_descriptor *(*query)(const uint32_t *, size_t) = sited_plugin_query; (void)query;"
            .into(),
    );
    lines.push("}".into());
    lines.join("\n") + "\n"
}

#[test]
fn the_c_header_matches_the_rust_layout_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for minor in [abi::ABI_MINOR, 0] {
        let file = dir.path().join(format!("layout-1.{minor}.c"));
        std::fs::write(&file, layout_asserts(minor)).expect("write");
        let define = format!("-DSITED_PLUGIN_ABI_MINOR={minor}");
        let defines: &[&str] = if minor == abi::ABI_MINOR {
            &[]
        } else {
            &[&define]
        };
        let (ok, stderr) = compile_c(&file, defines);
        assert!(
            ok,
            "ABI 1.{minor}: the header disagrees with Rust:\n{stderr}"
        );
    }
    // The check itself can fail: a wrong offset does not compile.
    let file = dir.path().join("wrong.c");
    let wrong = layout_asserts(abi::ABI_MINOR).replace(
        &format!(
            "offsetof(sited_host, log) == {}",
            offset_of!(HostVtable, log)
        ),
        "offsetof(sited_host, log) == 1",
    );
    std::fs::write(&file, wrong).expect("write");
    let (ok, stderr) = compile_c(&file, &[]);
    assert!(!ok && stderr.contains("sited_host.log"), "{stderr}");
    // ... and so does a wrong signature (on_edge's timestamp as 32 bits).
    let wrong = layout_asserts(abi::ABI_MINOR).replace(
        "int32_t (*plugin_on_edge)(void *, uint32_t, uint32_t, uint64_t)",
        "int32_t (*plugin_on_edge)(void *, uint32_t, uint32_t, uint32_t)",
    );
    std::fs::write(&file, wrong).expect("write");
    let (ok, stderr) = compile_c(&file, &[]);
    assert!(!ok && stderr.contains("plugin_on_edge"), "{stderr}");
}

#[test]
fn a_c_plugin_drives_an_output_end_to_end() {
    let site = SiteDir::new();
    write_config(&site, &c_plugins("current"), BUZZER);
    let daemon = Daemon::start(&site);
    let log = daemon.wait_log("plugin buzzer 1.0.0 (ABI 1.1): buzzer, an on/off output (C)");
    assert!(log.contains("libsited_plugin_buzzer.so"), "{log}");
    assert_eq!(daemon.state("buzzer"), "off");
    assert_eq!(site.pins()["6"]["level"], "low");

    let out = daemon.ctl(&["set", "buzzer", "on"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(daemon.state("buzzer"), "on");
    assert_eq!(site.pins()["6"]["level"], "high");

    // The C plugin's own refusal reaches sitectl as one line.
    let out = daemon.ctl(&["set", "buzzer", "loud"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("a buzzer is on, off or toggle"),
        "{:?}",
        text(&out)
    );
    assert!(daemon.ctl(&["set", "buzzer", "toggle"]).status.success());
    assert_eq!(site.pins()["6"]["level"], "low");
    assert!(daemon.ctl(&["set", "buzzer", "on"]).status.success());

    daemon.signal(libc::SIGTERM);
    let (status, _) = daemon.wait_exit();
    assert!(status.success());
    assert_eq!(site.pins()["6"]["level"], "low", "safe at stop");
}

#[test]
fn a_plugin_built_against_the_previous_minor_version_loads_and_works() {
    let site = SiteDir::new();
    write_config(&site, &c_plugins("abi-1.0"), BUZZER);
    let (ok, stderr) = check_config(&site.config_path());
    assert!(ok, "{stderr}");
    let daemon = Daemon::start(&site);
    let log = daemon.wait_log("plugin buzzer 1.0.0 (ABI 1.0) from");
    assert!(
        !log.contains("(ABI 1.0):"),
        "a 1.0 plugin has no description: {log}"
    );
    assert!(daemon.ctl(&["set", "buzzer", "on"]).status.success());
    assert_eq!(daemon.state("buzzer"), "on");
    assert_eq!(site.pins()["6"]["level"], "high");
}

#[test]
fn a_null_entry_point_is_refused_at_load_not_called() {
    let site = SiteDir::new();
    let config = write_config(
        &site,
        &c_plugins("null-validate"),
        "[[device]]\nname = \"probe\"\nkind = \"probe\"\npin = 6\ncase = \"bad-pointers\"\n",
    );
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains("is incompatible: its descriptor has no `validate` function"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // Starting the daemon fails the same way, with an exit status, not a signal.
    let out = program(sited_bin())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run sited");
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("no `validate` function"));
}

fn probe(case: &str, marker: &Path) -> String {
    format!(
        "[[device]]\nname = \"buzzer\"\nkind = \"buzzer\"\npin = 6\n\n[[device]]\nname = \"probe\"\nkind = \"probe\"\npin = 7\ncase = \"{case}\"\nmarker = \"{}\"\n",
        marker.display()
    )
}

#[test]
fn bad_pointers_from_a_plugin_get_an_error_code_and_the_daemon_carries_on() {
    let site = SiteDir::new();
    let marker = site.path().join("destroyed");
    write_config(
        &site,
        &c_plugins("current"),
        &probe("bad-pointers", &marker),
    );
    let daemon = Daemon::start(&site);
    let status = daemon.status();
    let probe = &status["devices"]["probe"];
    assert_eq!(probe["state"], "survived", "{probe}");
    let bad = abi::HOST_BAD_ARGUMENT;
    for call in [
        "log",
        "emit",
        "set_state",
        "set_error",
        "read_pin",
        "bad_ctx",
    ] {
        assert_eq!(probe["detail"][call], bad, "{call}: {probe}");
    }
    let log = daemon.log();
    assert!(
        log.contains("probe: refused the string the plugin passed to log: a null pointer with a non-zero length"),
        "{log}"
    );
    // A write with a context that is not the device's did nothing.
    assert_eq!(site.pins()["7"]["level"], "low");
    assert!(daemon.ctl(&["set", "buzzer", "on"]).status.success());
    assert_eq!(daemon.state("buzzer"), "on");
}

#[test]
fn a_callback_from_a_plugins_own_thread_is_refused() {
    let site = SiteDir::new();
    let marker = site.path().join("destroyed");
    write_config(
        &site,
        &c_plugins("current"),
        &probe("other-thread", &marker),
    );
    let daemon = Daemon::start(&site);
    let probe = daemon.status()["devices"]["probe"].clone();
    assert_eq!(
        probe["state"], "survived",
        "hijacked from another thread: {probe}"
    );
    for call in ["set_state", "write_pin", "log"] {
        assert_eq!(
            probe["detail"][call],
            abi::HOST_BAD_ARGUMENT,
            "{call}: {probe}"
        );
    }
    assert_eq!(site.pins()["7"]["level"], "low");
    let log = daemon.wait_log("from another thread or with an unknown context; refused");
    assert!(!log.contains("probe: from another thread"), "{log}");
}

#[test]
fn an_instance_handed_out_by_a_failed_create_is_destroyed() {
    let site = SiteDir::new();
    let marker = site.path().join("destroyed");
    write_config(
        &site,
        &c_plugins("current"),
        &probe("fail-with-instance", &marker),
    );
    let daemon = Daemon::start(&site);
    let status = daemon.status();
    let fault = status["devices"]["probe"]["fault"].as_str().unwrap_or("");
    assert!(
        fault.contains("failing create on purpose"),
        "{}",
        status["devices"]["probe"]
    );
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("destroy ran")
            .trim(),
        "destroyed"
    );
    assert_eq!(site.pins()["7"]["level"], "low");
    assert_eq!(daemon.state("buzzer"), "off");
}

/// A private plugin directory holding a copy of the buzzer, as root or sited's user would
/// install it (0755 directory, 0644 file).
fn installed_buzzer(parent: &Path) -> PathBuf {
    let dir = parent.join("plugins");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = dir.join("libsited_plugin_buzzer.so");
    std::fs::copy(
        c_plugins("current").join("libsited_plugin_buzzer.so"),
        &file,
    )
    .expect("copy");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    dir
}

#[test]
fn a_plugin_in_a_world_writable_directory_is_refused() {
    let site = SiteDir::new();
    let dir = installed_buzzer(site.path());
    let config = write_config(&site, &dir, BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(ok, "the installed copy loads: {stderr}");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "refusing to load {}: it is group- or world-writable (mode 777)",
            dir.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_writable_directory_anywhere_above_the_plugins_is_refused() {
    let site = SiteDir::new();
    let above = site.path().join("shared");
    let dir = installed_buzzer(&above);
    std::fs::set_permissions(&above, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let config = write_config(&site, &dir, BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "refusing to load {}: it is group- or world-writable (mode 775)",
            above.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_symlinked_plugin_is_refused_even_to_a_good_file() {
    let site = SiteDir::new();
    let good = installed_buzzer(&site.path().join("good"));
    let dir = site.path().join("links");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink(
        good.join("libsited_plugin_buzzer.so"),
        dir.join("libsited_plugin_buzzer.so"),
    )
    .expect("symlink");
    let config = write_config(&site, &dir, BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains("it is a symbolic link; install the plugin file itself"),
        "{stderr}"
    );
}

#[test]
fn a_plugin_directory_reached_through_a_link_in_a_checked_directory_loads() {
    let site = SiteDir::new();
    let real = installed_buzzer(&site.path().join("real"));
    let via = site.path().join("via");
    std::os::unix::fs::symlink(&real, &via).expect("symlink");
    let config = write_config(&site, &via, BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(ok, "a link in a trusted directory is followed: {stderr}");

    // The same link inside a directory others can write is refused, with that directory.
    let open = site.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::os::unix::fs::symlink(&real, open.join("plugins")).expect("symlink");
    let config = write_config(&site, &open.join("plugins"), BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "refusing to load {}: it is group- or world-writable (mode 777)",
            open.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_sticky_world_writable_plugin_directory_is_refused() {
    // /tmp-like: fine on the way to the plugins, not as the plugin directory itself, where
    // anyone could drop a library (or hard-link a root-owned one) beside the real ones.
    let site = SiteDir::new();
    let dir = installed_buzzer(site.path());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let config = write_config(&site, &dir, BUZZER);
    let (ok, stderr) = check_config(&config);
    assert!(!ok);
    assert!(
        stderr.contains("it is group- or world-writable (mode 1777)"),
        "{stderr}"
    );
}
