//! A plugin that panics or fails is contained: its device is put in its safe state and shown
//! as faulted, and the daemon and every other device carry on.

use site_tests::*;

fn config_with_faulty(extra: &str) -> String {
    format!(
        "[[device]]\nname = \"office_light\"\nkind = \"relay\"\npin = 24\n\n[[device]]\nname = \"trap\"\nkind = \"faulty\"\npin = 9\n{extra}\n"
    )
}

#[test]
fn panic_in_an_edge_handler_faults_only_that_device() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("panic-in = \"edge\""));
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["sim", "trap", "high"]).status.success());
    daemon.wait_state("trap", "faulted");
    let status = daemon.status();
    let fault = status["devices"]["trap"]["fault"]
        .as_str()
        .expect("fault reason");
    assert!(fault.contains("panicked"), "{fault}");
    let out = daemon.ctl(&["set", "office_light", "on"]);
    assert!(
        out.status.success(),
        "the rest of the site still works: {:?}",
        text(&out)
    );
    assert!(daemon.log().contains("FAULTED"));
}

#[test]
fn panic_in_create_leaves_the_device_faulted_and_the_daemon_running() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("panic-in = \"create\""));
    let daemon = Daemon::start(&site);
    let status = daemon.status();
    assert_eq!(status["devices"]["trap"]["state"], "faulted");
    assert!(
        status["devices"]["trap"]["fault"]
            .as_str()
            .expect("reason")
            .contains("panicked")
    );
    assert_eq!(status["devices"]["office_light"]["state"], "off");
}

#[test]
fn panic_in_a_timer_faults_the_device() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("panic-in = \"timer\""));
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["sim", "trap", "high"]).status.success());
    daemon.wait_state("trap", "faulted");
}

#[test]
fn an_error_from_an_edge_handler_faults_the_device() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("fail-in = \"edge\""));
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["sim", "trap", "high"]).status.success());
    daemon.wait_state("trap", "faulted");
}

#[test]
fn a_faulted_device_refuses_commands_with_a_reason() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("panic-in = \"edge\""));
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["sim", "trap", "high"]).status.success());
    daemon.wait_state("trap", "faulted");
    let out = daemon.ctl(&["sim", "trap", "low"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("faulted"), "{stderr}");
}

#[test]
fn a_plugin_cannot_claim_a_pin_that_is_not_its_own() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("steal-pin = 24"));
    let daemon = Daemon::start(&site);
    let status = daemon.status();
    assert_eq!(
        status["devices"]["trap"]["detail"]["stole"], false,
        "{status}"
    );
    assert_eq!(status["devices"]["office_light"]["state"], "off");
    assert!(daemon.log().contains("refused to let it claim GPIO 24"));
}

#[test]
fn reload_recreates_a_faulted_device() {
    let site = SiteDir::new();
    site.write_config(&config_with_faulty("panic-in = \"edge\""));
    let daemon = Daemon::start(&site);
    assert!(daemon.ctl(&["sim", "trap", "high"]).status.success());
    daemon.wait_state("trap", "faulted");
    site.write_config(&config_with_faulty(""));
    assert!(daemon.ctl(&["reload"]).status.success());
    assert_ne!(daemon.state("trap"), "faulted");
}
