//! The README's "Try it" walkthrough, run as a newcomer runs it: the demo config, the `export`
//! line the demo prints, and every command of the README's block pasted into a shell whose
//! working directory is not the checkout. The commands are read from README.md itself, so the
//! README cannot drift from what works.
//!
//! What differs from a person at a keyboard, and why:
//! - the demo config is copied into a temporary directory, with its hub on ports the kernel
//!   picks (tests use no fixed ports) and its plugin directory pointing at this build; the
//!   README's `6060` is replaced by the UDP port the hub got;
//! - between commands the script waits, as a person would, for a running door cycle to end and
//!   for the door nodes' reports to reach the hub, and after a datagram for its reading;
//! - `sitectl log -f` follows until Ctrl-C, so it is left out here (`site::` tests cover it).

use site_tests::*;
use std::path::Path;

/// The README's walkthrough: the `sh` block after "Paste it there, then:".
fn walkthrough(readme: &str) -> Vec<String> {
    let start = readme
        .find("Paste it there, then:")
        .expect("the README's walkthrough");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("its sh block") + 6..];
    let block = &block[..block.find("```").expect("the block's end")];
    block.lines().map(str::to_string).collect()
}

/// Single-quotes `text` for the shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

const PRELUDE: &str = r#"set -euo pipefail
# Waits (at most 20 s) until no door cycle is running and every door node's report has reached
# the hub, as a person waits for the doors before the next step.
settle() {
  local deadline=$((SECONDS + 20))
  until sitectl status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["site"]
busy = s.get("access", {}).get("state") in ("entry", "exit")
waiting = any(m.get("link", {}).get("outbox", 0) for m in s.values() if isinstance(m, dict))
sys.exit(1 if busy or waiting else 0)'; do
    if ((SECONDS >= deadline)); then echo "settle: the site is still busy after 20 s" >&2; return 1; fi
    sleep 0.05
  done
}
# Waits (at most 20 s) until the hub has Sensor01's temperature reading $1.
reading() {
  local deadline=$((SECONDS + 20))
  until sitectl status --json | python3 -c '
import json, sys
v = json.load(sys.stdin).get("sensors", {}).get("Sensor01", {}).get("temperature", {}).get("value")
sys.exit(0 if v == float(sys.argv[1]) else 1)' "$1"; do
    if ((SECONDS >= deadline)); then echo "reading: no Sensor01 temperature $1 after 20 s" >&2; return 1; fi
    sleep 0.05
  done
}
"#;

#[test]
fn the_readme_walkthrough_works_from_another_directory() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let commands = walkthrough(&readme);
    assert!(
        commands.iter().any(|l| l.starts_with("sitectl sim")),
        "{commands:?}"
    );

    // The README's first command runs the shipped demo config as it is: its plugin directory
    // (`../target/debug`) must be this build's, and the file must load.
    if build_dir() == root.join("target/debug") {
        let out = program(sited_bin())
            .arg("--check-config")
            .arg(root.join("etc/demo.toml"))
            .output()
            .expect("sited --check-config");
        assert!(
            out.status.success(),
            "etc/demo.toml as shipped: {:?}",
            text(&out)
        );
    }

    // The demo, as `target/debug/sited --config etc/demo.toml` runs it, in a directory of its
    // own (the real target/demo may hold a demo someone is running).
    let checkout = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(checkout.path().join("etc")).expect("etc");
    let demo = std::fs::read_to_string(root.join("etc/demo.toml")).expect("etc/demo.toml");
    for fixed in [
        "tcp = \"127.0.0.1:5050\"",
        "udp = \"127.0.0.1:6060\"",
        "plugin-dir = \"../target/debug\"",
    ] {
        assert!(demo.contains(fixed), "etc/demo.toml no longer says {fixed}");
    }
    let demo = demo
        .replace("127.0.0.1:5050", "127.0.0.1:0")
        .replace("127.0.0.1:6060", "127.0.0.1:0")
        .replace(
            "plugin-dir = \"../target/debug\"",
            &format!("plugin-dir = \"{}\"", build_dir().display()),
        );
    let config = checkout.path().join("etc/demo.toml");
    std::fs::write(&config, demo).expect("write the demo config");
    let socket = checkout.path().join("target/demo/control.sock");
    let daemon = Daemon::spawn(&config, &socket);
    let log = daemon.wait_log("in another terminal: export ");
    let export = log
        .lines()
        .find_map(|l| l.strip_prefix("sited: in another terminal: "))
        .expect("the export line")
        .to_string();
    wait_for("the demo to answer status", || {
        ctl_as_root(&socket, &["status", "--json"])
            .status
            .success()
            .then_some(())
    });
    let udp = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("the hub's udp address")
        .to_string();
    let udp_port = udp.rsplit_once(':').expect("host:port").1.to_string();

    let runner_tmp = runner_wrappers();
    let runner_dir = runner_tmp.as_ref().map(|d| d.path().to_path_buf());
    // The script: each README command, announced with `@@@` so its output can be told apart.
    let mut script = String::from(PRELUDE);
    let mut ran = Vec::new();
    for line in &commands {
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') || command.starts_with("sitectl log -f") {
            continue;
        }
        let command = if command.starts_with("export SITED_SOCKET=") {
            // The README shows the shape; the demo printed the real thing. Cross-built under
            // qemu-user, `sitectl` from PATH starts through the runner (a wrapper before it).
            match &runner_dir {
                Some(dir) => format!("{export}; export PATH={}:$PATH", dir.display()),
                None => export.clone(),
            }
        } else {
            command.replace(
                "/dev/udp/127.0.0.1/6060",
                &format!("/dev/udp/127.0.0.1/{udp_port}"),
            )
        };
        if !command.starts_with("sitectl status") && !command.starts_with("export") {
            script.push_str("settle\n");
        }
        script.push_str(&format!("echo @@@ {}\n{command}\n", quoted(line.trim())));
        if let Some(value) = command
            .split(",temperature,")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
        {
            script.push_str(&format!("reading {value}\n"));
        }
        ran.push(line.trim().to_string());
    }
    script.push_str("settle\n");

    // Pasted into a shell somewhere else entirely, with nothing of ours in its environment.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let path = std::env::var("PATH").unwrap_or_default();
    let path: Vec<&str> = path
        .split(':')
        .filter(|p| !Path::new(p).starts_with(build_dir()))
        .collect();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(elsewhere.path())
        .env_remove("SITED_SOCKET")
        .env("PATH", path.join(":"))
        .output()
        .expect("bash");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}\nscript:\n{script}"
    );

    // Each command's output, by the README line that ran it.
    let outputs: Vec<(&str, String)> = stdout
        .split("@@@ ")
        .skip(1)
        .map(|chunk| {
            let (command, output) = chunk.split_once('\n').unwrap_or((chunk, ""));
            (command, output.to_string())
        })
        .collect();
    assert_eq!(
        outputs.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        ran,
        "every command ran, in order"
    );
    // Each checked by what the README says beside it, so a new line in the README does not move
    // a check onto another command.
    let output_of = |says: &str| -> &str {
        outputs
            .iter()
            .find(|(c, _)| c.contains(says))
            .map(|(_, o)| o.as_str())
            .unwrap_or_else(|| panic!("no README command saying {says:?} in\n{stdout}"))
    };
    assert!(
        output_of("# staff, the modules").contains("staff on premises: 0"),
        "{stdout}"
    );
    let log = output_of("Staff member entered via access control");
    assert!(
        log.contains("Staff member entered via access control") && log.trim_end().ends_with(", 1"),
        "the entry is in the log: {log}"
    );
    let hot = output_of("# rule office-hot: ACTIVE, Sensor01 temperature 26.5");
    assert!(
        hot.contains("rule office-hot: ACTIVE, Sensor01 temperature 26.5"),
        "the rule switched on, as the README says: {hot}"
    );
    let devices = output_of("sitectl devices");
    assert!(
        devices
            .lines()
            .any(|l| l.contains("Sensor01") && l.contains("udp")),
        "{devices}"
    );
    let pins: serde_json::Value =
        serde_json::from_str(output_of("pins.json")).expect("pins.json is JSON");
    assert!(pins.is_object(), "{pins}");

    // And the site is where the walkthrough left it.
    let status = daemon.status();
    assert_eq!(status["staff"], 0, "in, out, then the emergency: {status}");
    assert_eq!(
        status["devices"]["office_light"]["state"], "on",
        "set by hand"
    );
    assert_eq!(
        status["devices"]["office_fan"]["state"], "off",
        "24.4 is below 24.5"
    );
    assert_eq!(status["devices"]["siren"]["state"], "off");
    let events = std::fs::read_to_string(checkout.path().join("target/demo/events.log"))
        .expect("the event log");
    for what in [
        "Staff member entered via access control",
        "Staff member left via access control",
        "Emergency exit opened",
        "Emergency exit closed",
    ] {
        assert!(events.contains(what), "{what} missing from:\n{events}");
    }
    daemon.signal(libc::SIGINT);
    let (status, log) = daemon.wait_exit();
    assert!(status.success(), "Ctrl-C stops it cleanly: {log}");
}
