//! Every kind of bad input gets a clear one-line error and changes nothing: bad config files,
//! missing or incompatible plugins, bad sitectl requests, non-operators, malformed and
//! oversized control requests.

use site_tests::*;

fn check_config(path: &std::path::Path) -> (i32, String) {
    let out = program(sited_bin())
        .arg("--check-config")
        .arg(path)
        .output()
        .expect("run sited");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    )
}

fn one_line(text: &str) {
    assert_eq!(text.lines().count(), 1, "expected one line, got:\n{text}");
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["sited.toml", "demo.toml"] {
        let path = workspace_root().join("etc").join(name);
        let out = program(sited_bin())
            .arg("--check-config")
            .arg(&path)
            .arg("--plugin-dir")
            .arg(build_dir())
            .output()
            .expect("run sited");
        assert!(out.status.success(), "{name}: {:?}", text(&out));
    }
}

#[test]
fn bad_toml_is_reported_with_file_and_line() {
    let site = SiteDir::new();
    std::fs::write(site.config_path(), format!("{}[[device]\n", site.header())).expect("write");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(
        err.contains(&format!("{}:9", site.config_path().display())),
        "{err}"
    );
}

#[test]
fn unknown_key_is_reported_with_line_and_key() {
    let site = SiteDir::new();
    site.write_config("[[device]]\nname = \"led\"\nkind = \"led\"\npin = 17\ncolour = \"red\"\n");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains(":13: device[0].colour: "), "{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");
}

#[test]
fn wrong_type_is_reported() {
    let site = SiteDir::new();
    site.write_config(
        "[[device]]\nname = \"b\"\nkind = \"button\"\npin = 5\ndebounce-ms = \"soon\"\n",
    );
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("device[0].debounce-ms"), "{err}");
}

#[test]
fn servo_range_out_of_bounds_is_reported_with_its_key() {
    let site = SiteDir::new();
    site.write_config(
        "[[device]]\nname = \"door\"\nkind = \"servo\"\npin = 12\nopen-angle = 270.0\n",
    );
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains(":13: device[0].open-angle"), "{err}");
}

#[test]
fn pin_used_twice_is_reported() {
    let site = SiteDir::new();
    site.write_config("[[device]]\nname = \"a\"\nkind = \"led\"\npin = 17\n[[device]]\nname = \"b\"\nkind = \"led\"\npin = 17\n");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("GPIO 17 is already used by device \"a\""),
        "{err}"
    );
}

#[test]
fn a_rule_naming_an_unknown_device_is_reported_with_its_line() {
    let site = SiteDir::new();
    site.write_config(&format!(
        "{}\n[[rule]]\nsensor = \"Sensor01\"\nquantity = \"temperature\"\nabove = 25.0\ndevice = \"attic_fan\"\n",
        site.hub_section()
    ));
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(
        err.contains(":18: rule[0].device: no device named \"attic_fan\""),
        "{err}"
    );
}

#[test]
fn unknown_kind_names_the_missing_plugin_file() {
    let site = SiteDir::new();
    site.write_config("[[device]]\nname = \"zap\"\nkind = \"laser\"\npin = 17\n");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(err.contains("device[0].kind"), "{err}");
    assert!(
        err.contains("libsited_plugin_laser.so does not exist"),
        "{err}"
    );
    assert!(
        err.contains("button"),
        "should list the kinds that exist: {err}"
    );
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_config() {
    let site = SiteDir::new();
    site.write_config("[[device]]\nname = \"zap\"\nkind = \"laser\"\npin = 17\n");
    let daemon = Daemon::spawn(&site.config_path(), &site.socket());
    let (status, log) = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("libsited_plugin_laser.so"), "{log}");
    assert_eq!(
        log.matches("libsited_plugin_laser.so").count(),
        1,
        "the reason is printed once: {log}"
    );
    assert!(!site.socket().exists());
}

/// Builds a plugin directory with symlinks to the real plugins plus one C plugin.
fn plugin_dir_with_c_plugin(site: &SiteDir, kind: &str, c_source: &str) -> std::path::PathBuf {
    let dir = site.path().join("plugins");
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(build_dir()).expect("build dir").flatten() {
        let name = entry.file_name().into_string().expect("name");
        if name.starts_with("libsited_plugin_") && name.ends_with(".so") {
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).expect("symlink");
        }
    }
    let src = site.path().join(format!("{kind}.c"));
    std::fs::write(&src, c_source).expect("write C");
    let out = c_compiler()
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join(format!("libsited_plugin_{kind}.so")))
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(out.status.success(), "cc failed: {:?}", text(&out));
    dir
}

#[test]
fn a_plugin_speaking_another_abi_is_refused_with_the_versions() {
    let site = SiteDir::new();
    let c = "#include <stddef.h>\n#include <stdint.h>\nconst void *sited_plugin_query(const uint32_t *v, size_t n) { for (size_t i = 0; i < n; i++) if (v[i] == 99) return (const void *)1; return NULL; }\n";
    let dir = plugin_dir_with_c_plugin(&site, "future", c);
    std::fs::write(
        site.config_path(),
        format!(
            "{}[[device]]\nname = \"x\"\nkind = \"future\"\npin = 3\n",
            site.header_with_plugins(&dir)
        ),
    )
    .expect("write");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    one_line(&err);
    assert!(
        err.contains("libsited_plugin_future.so is incompatible"),
        "{err}"
    );
    assert!(
        err.contains("ABI versions this sited speaks ([1])"),
        "{err}"
    );
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let site = SiteDir::new();
    let dir = plugin_dir_with_c_plugin(&site, "impostor", "int not_a_plugin(void) { return 1; }\n");
    std::fs::write(
        site.config_path(),
        format!(
            "{}[[device]]\nname = \"x\"\nkind = \"impostor\"\npin = 3\n",
            site.header_with_plugins(&dir)
        ),
    )
    .expect("write");
    let (code, err) = check_config(&site.config_path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a sited plugin"), "{err}");
}

#[test]
fn sitectl_validate_checks_a_file_without_a_daemon() {
    let site = SiteDir::new();
    site.write_config("[[device]]\nname = \"led\"\nkind = \"led\"\npin = 17\ncolour = 1\n");
    // sitectl runs sited itself: under an emulator, through the runner.
    let wrappers = runner_wrappers();
    let validate = || {
        let mut command = program(sitectl_bin());
        if let Some(dir) = &wrappers {
            command.env("SITED_BIN", dir.path().join("sited"));
        }
        command
    };
    let out = validate()
        .args(["validate", "-c"])
        .arg(site.config_path())
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("device[0].colour"), "{stderr}");
    site.write_config("[[device]]\nname = \"led\"\nkind = \"led\"\npin = 17\n");
    let out = validate()
        .args(["validate", "-c"])
        .arg(site.config_path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

fn running() -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(SITE_DEVICES);
    let daemon = Daemon::start(&site);
    (site, daemon)
}

#[test]
fn unknown_device_gets_exit_1_and_the_device_list() {
    let (_site, daemon) = running();
    let out = daemon.ctl(&["set", "front_gate", "on"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    one_line(stderr.trim_end());
    assert!(
        stderr.contains("no device named \"front_gate\""),
        "{stderr}"
    );
}

#[test]
fn a_value_the_kind_does_not_take_is_refused_and_changes_nothing() {
    let (_site, daemon) = running();
    for (device, value) in [
        ("office_light", "purple"),
        ("entry_door", "400"),
        ("siren", ""),
    ] {
        let out = daemon.ctl(&["set", device, value]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{device} {value}: {stderr}");
        one_line(stderr.trim_end());
    }
    let out = daemon.ctl(&["sim", "entry_button", "sideways"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(daemon.state("office_light"), "off");
    assert_eq!(daemon.state("entry_door"), "closed");
    assert_eq!(daemon.state("entry_button"), "released");
}

#[test]
fn sim_on_an_output_and_set_on_an_input_are_refused() {
    let (_site, daemon) = running();
    let out = daemon.ctl(&["sim", "office_light", "on"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is an output"), "{stderr}");
    let out = daemon.ctl(&["set", "entry_button", "pressed"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is an input"), "{stderr}");
}

#[test]
fn a_non_operator_may_observe_but_not_operate() {
    if !is_root() {
        eprintln!("skipped: needs root to run sitectl as another user");
        return;
    }
    let (_site, daemon) = running();
    // Let anyone connect, so the daemon's own SO_PEERCRED check is what is tested.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    std::fs::set_permissions(
        daemon.socket.parent().expect("dir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod dir");
    let nobody = 65534;
    let out = ctl_as_uid(&daemon.socket, nobody, &["status", "--json"]);
    assert!(out.status.success(), "observe: {:?}", text(&out));
    let out = ctl_as_uid(&daemon.socket, nobody, &["set", "office_light", "on"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert_eq!(daemon.state("office_light"), "off");
    let out = ctl_as_uid(&daemon.socket, nobody, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn malformed_request_gets_an_error_line_and_the_daemon_carries_on() {
    let (_site, daemon) = running();
    let reply = raw_request(&daemon.socket, b"{\"cmd\": \"explode\"}\n");
    assert!(reply.contains("\"ok\":false"), "{reply}");
    assert!(reply.contains("bad-request"), "{reply}");
    let reply = raw_request(&daemon.socket, b"not json at all\n");
    assert!(reply.contains("malformed request"), "{reply}");
    assert_eq!(daemon.state("entry_button"), "released");
}

#[test]
fn oversized_request_closes_the_connection_and_the_daemon_carries_on() {
    let (_site, daemon) = running();
    let huge = vec![b'x'; 200 * 1024];
    let reply = raw_request(&daemon.socket, &huge);
    assert!(reply.contains("longer than"), "{reply}");
    assert!(daemon.ctl(&["set", "office_fan", "on"]).status.success());
}

#[test]
fn sitectl_without_a_daemon_gives_one_line_and_exit_2() {
    let site = SiteDir::new();
    let out = ctl_as_root(&site.socket(), &["status"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty());
    one_line(stderr.trim_end());
    assert!(!stderr.contains("panicked"), "{stderr}");
}
