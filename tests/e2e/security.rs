//! Issue 12's secure links, end to end against the real daemon: keys made with `sitectl key`,
//! `CHAL`/`AUTH` on the plain and the TLS port, roles, the failed-AUTH limit, the keys file's
//! mode, and a door node over TLS with its key. Every client here is a real socket on
//! loopback; the TLS client pins the certificate `sitectl cert` prints.

use site_daemon::keys::{Secret, auth_mac};
use site_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A hub client speaking the line protocol, over plain TCP or TLS.
struct HubClient {
    reader: BufReader<Box<dyn ReadWrite>>,
}

impl HubClient {
    fn plain(addr: &str) -> HubClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        HubClient {
            reader: BufReader::new(Box::new(tcp)),
        }
    }

    /// A TLS connection that accepts only the certificate whose SHA-256 is `fingerprint`;
    /// `Err` if the handshake fails (the hub showed another certificate).
    fn tls(addr: &str, fingerprint: &str) -> Result<HubClient, String> {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let pinned = site_daemon::config::site::parse_fingerprint(fingerprint).expect("fp");
        let config = site_daemon::tls::client_config(pinned);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("client");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now, so a refused certificate shows here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| {
                // The daemon's own words for a refused certificate.
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => site_daemon::tls::describe(tls),
                    None => e.to_string(),
                }
            })?;
        }
        Ok(HubClient {
            reader: BufReader::new(Box::new(stream)),
        })
    }

    fn send(&mut self, text: &str) {
        let stream = self.reader.get_mut();
        stream.write_all(text.as_bytes()).expect("send");
        stream.flush().expect("flush");
    }

    /// The next line ("" once the hub has closed).
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(_) => line,
            // A TLS peer that closes without close_notify, or a reset after our error.
            Err(e) if line.is_empty() && e.kind() != std::io::ErrorKind::WouldBlock => {
                String::new()
            }
            Err(e) => panic!("read: {e} (so far {line:?})"),
        }
    }

    /// `CHAL`: the nonce the hub answers with.
    fn challenge(&mut self) -> String {
        self.send("CHAL\n");
        let chal = self.line();
        let nonce = chal
            .strip_prefix("CHAL ")
            .map(str::trim_end)
            .unwrap_or_else(|| panic!("no nonce: {chal:?}"));
        assert_eq!(nonce.len(), 64, "{chal:?}");
        nonce.to_string()
    }

    /// `CHAL`, then `AUTH` with `secret` (hex) under `name`; the hub's answer to `AUTH`.
    fn auth(&mut self, name: &str, secret: &str) -> String {
        let nonce = self.challenge();
        let secret = Secret::from_hex(secret).expect("secret");
        self.send(&format!(
            "AUTH {name} {}\n",
            auth_mac(&secret, name, &nonce)
        ));
        self.line()
    }
}

/// A hub with a plain and a TLS listener and a UDP port, and the site's devices.
fn hub(extra: &str) -> (SiteDir, Daemon) {
    let site = SiteDir::new();
    site.write_config(&format!(
        "{}tls = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n{extra}{SITE_DEVICES}",
        site.hub_section()
    ));
    let daemon = Daemon::start(&site);
    (site, daemon)
}

/// `sitectl key add`: the secret, alone on its line.
fn add_key(daemon: &Daemon, name: &str, role: &str) -> String {
    let out = daemon.ctl(&["key", "add", name, "--role", role]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let secret = stdout.trim_end_matches('\n');
    assert!(
        secret.len() == 64
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "one line of 64 lowercase hex: {stdout:?}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    secret.to_string()
}

fn tls_addr(daemon: &Daemon) -> String {
    daemon.status()["hub"]["tls"]
        .as_str()
        .expect("the TLS listener's address")
        .to_string()
}

fn udp_addr(daemon: &Daemon) -> String {
    daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("the UDP listener's address")
        .to_string()
}

fn fingerprint(daemon: &Daemon) -> String {
    let out = daemon.ctl(&["cert"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let fp = stdout.trim().to_string();
    assert_eq!(fp.len(), 64, "{stdout:?}");
    fp
}

#[test]
fn tls_with_the_pinned_fingerprint_works_and_another_certificate_is_refused() {
    let (site, daemon) = hub("");
    let fp = fingerprint(&daemon);
    // The fingerprint is the SHA-256 of the certificate's DER, as the hub made it.
    let pem = std::fs::read(site.path().join("state/tls/cert.pem")).expect("cert");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|c: rustls::pki_types::CertificateDer<'_>| c.as_ref().to_vec())
        .expect("pem");
    assert_eq!(fp, site_daemon::keys::sha256_hex(&der));
    let addr = tls_addr(&daemon);
    let secret = add_key(&daemon, "plug", "actuator");
    let mut client = HubClient::tls(&addr, &fp).expect("handshake");
    assert_eq!(client.auth("plug", &secret), "OK AUTH actuator\n");
    client.send("DEVICE plug TYPE relay\n");
    daemon.wait_log("registered DEVICE=plug TYPE=relay");
    let devices = daemon.ctl(&["devices", "--json"]);
    let (json, _) = text(&devices);
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    let plug = &list["devices"][0];
    assert_eq!(
        (plug["via"].as_str(), plug["key"].as_str()),
        (Some("tls"), Some("plug"))
    );
    // Colons are allowed in a pinned fingerprint, as many tools print them.
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(HubClient::tls(&addr, &colons.join(":")).is_ok());
    let mut wrong = fp.into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let err = HubClient::tls(&addr, &String::from_utf8(wrong).expect("hex"))
        .err()
        .expect("another certificate is refused");
    assert!(err.contains("not the pinned"), "{err}");
    // Without a key, the TLS port allows nothing.
    let mut anonymous = HubClient::tls(&addr, &fingerprint(&daemon)).expect("handshake");
    anonymous.send("DEVICE Thermo TYPE temperature\n");
    assert_eq!(anonymous.line(), "ERR forbidden\n");
}

#[test]
fn auth_needs_a_fresh_challenge_and_the_right_key() {
    let (_site, daemon) = hub("");
    let addr = daemon.hub_addr();
    let secret = add_key(&daemon, "plug", "actuator");
    let mut good = HubClient::plain(&addr);
    assert_eq!(good.auth("plug", &secret), "OK AUTH actuator\n");

    let other = Secret::generate().expect("random").to_hex();
    let mut wrong = HubClient::plain(&addr);
    assert_eq!(wrong.auth("plug", &other), "ERR auth\n");
    assert_eq!(wrong.line(), "", "the hub closes after ERR auth");

    let mut unknown = HubClient::plain(&addr);
    assert_eq!(unknown.auth("nobody", &secret), "ERR auth\n");

    // AUTH without CHAL: a mac over a nonce the hub never gave.
    let mut without = HubClient::plain(&addr);
    let key = Secret::from_hex(&secret).expect("secret");
    without.send(&format!(
        "AUTH plug {}\n",
        auth_mac(&key, "plug", &"00".repeat(32))
    ));
    assert_eq!(without.line(), "ERR auth\n");

    // A recorded exchange replayed on a new connection: the nonce is another one now.
    let mut first = HubClient::plain(&addr);
    let nonce = first.challenge();
    let recorded = format!("AUTH plug {}\n", auth_mac(&key, "plug", &nonce));
    first.send(&recorded);
    assert_eq!(first.line(), "OK AUTH actuator\n");
    let mut replay = HubClient::plain(&addr);
    replay.send("CHAL\n");
    let fresh = replay.line();
    assert!(
        fresh.starts_with("CHAL ") && !fresh.contains(&nonce),
        "{fresh}"
    );
    replay.send(&recorded);
    assert_eq!(replay.line(), "ERR auth\n");
    // After a successful AUTH, the exchange is over on that connection.
    first.send("CHAL\n");
    assert_eq!(first.line(), "ERR already authenticated as plug\n");
    let log = daemon.wait_log("hub: authentication failed from 127.0.0.1");
    for why in [
        "wrong mac for key plug",
        "no key named nobody",
        "AUTH without CHAL first",
    ] {
        assert!(log.contains(why), "{why}: {log}");
    }
    // A seed device that never asks is never challenged: the first line it gets is the
    // operator's command.
    let mut seed = HubClient::plain(&addr);
    seed.send("DEVICE Sensor01 TYPE temperature\n");
    daemon.wait_log("registered DEVICE=Sensor01");
    let socket = daemon.socket.clone();
    let operator = std::thread::spawn(move || ctl_as_root(&socket, &["send", "Sensor01", "PING"]));
    assert_eq!(seed.line(), "PING\n");
    seed.send("ACK PING\n");
    let out = operator.join().expect("sitectl");
    assert_eq!(text(&out).0, "ACK PING\n");
}

#[test]
fn five_failures_from_one_address_shut_it_out_for_a_minute() {
    let sections = |open: &str| format!("\n[access]\nopen-secs = {open}\n");
    let (site, daemon) = hub(&sections(DOOR_SECS));
    let addr = daemon.hub_addr();
    let secret = add_key(&daemon, "plug", "actuator");
    let other = Secret::generate().expect("random").to_hex();
    for _ in 0..5 {
        let mut client = HubClient::plain(&addr);
        assert_eq!(client.auth("plug", &other), "ERR auth\n");
    }
    // Now even the right key is refused (unchecked) for a minute.
    let mut client = HubClient::plain(&addr);
    assert_eq!(client.auth("plug", &secret), "ERR auth\n");
    daemon.wait_log("failed to authenticate 5 times within 60 s; refusing it for 60 s");
    daemon.wait_log("127.0.0.1 is refused for");
    // Clients that do not authenticate carry on.
    let mut seed = HubClient::plain(&addr);
    seed.send("{\"type\": \"humidity\", \"device\": \"sensor2\", \"value\": 41}\n");
    wait_for("the reading", || {
        daemon.status()["sensors"]["sensor2"]["humidity"]["value"]
            .as_f64()
            .filter(|v| *v == 41.0)
    });
    // Nor is this daemon's own access module kept out: a reload that changes it makes its
    // link connect and authenticate again, from the shut-out address, and its entry counts.
    site.write_config(&format!(
        "{}tls = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n{}{SITE_DEVICES}",
        site.hub_section(),
        sections("0.2")
    ));
    let out = daemon.ctl(&["reload"]);
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for("the access module's link to be back", || {
        (daemon.status()["site"]["access"]["link"]["connected"] == true).then_some(())
    });
    daemon.press("entry_button");
    daemon.wait_staff(1);
}

#[test]
fn each_role_is_refused_what_it_may_not_do_and_keyed_names_are_kept() {
    let (_site, daemon) = hub("");
    let addr = daemon.hub_addr();
    let sensor = add_key(&daemon, "t1", "sensor");
    let actuator = add_key(&daemon, "plug", "actuator");
    let node = add_key(&daemon, "front", "node");

    let mut s = HubClient::plain(&addr);
    assert_eq!(s.auth("t1", &sensor), "OK AUTH sensor\n");
    s.send("{\"type\": \"temperature\", \"device\": \"t1\", \"value\": 21.5}\n");
    s.send("DEVICE t1 TYPE temperature\n");
    assert_eq!(s.line(), "ERR forbidden\n", "a sensor registers no DEVICE");
    s.send("EVENT 1 ENTRY\n");
    assert_eq!(s.line(), "ERR forbidden\n", "nor reports site events");
    wait_for("t1's reading", || {
        daemon.status()["sensors"]["t1"]["temperature"]["value"].as_f64()
    });

    let mut a = HubClient::plain(&addr);
    assert_eq!(a.auth("plug", &actuator), "OK AUTH actuator\n");
    a.send("DEVICE front-access TYPE relay\n");
    assert_eq!(a.line(), "ERR forbidden\n", "only its own name");
    a.send("DEVICE plug TYPE access-control EPOCH 0011223344556677\n");
    assert_eq!(a.line(), "ERR forbidden\n", "site modules are nodes");
    a.send("EVENT 1 ENTRY\n");
    assert_eq!(a.line(), "ERR forbidden\n");
    a.send("DEVICE plug TYPE relay\n");
    daemon.wait_log("registered DEVICE=plug TYPE=relay");

    let mut n = HubClient::plain(&addr);
    assert_eq!(n.auth("front", &node), "OK AUTH node\n");
    n.send("DEVICE back-access TYPE access-control EPOCH 0011223344556677\n");
    assert_eq!(
        n.line(),
        "ERR forbidden\n",
        "a node's names start with its key's"
    );
    n.send("DEVICE front-access TYPE access-control EPOCH 0011223344556677\nEVENT 1 ENTRY\n");
    assert_eq!(n.line(), "OK 1\n");
    daemon.wait_staff(1);

    // Without a key (loopback clients are actuators): no keyed name, no taking over, no
    // readings under a sensor key's name, no site events.
    let mut anon = HubClient::plain(&addr);
    anon.send("DEVICE plug TYPE relay\n");
    assert_eq!(anon.line(), "ERR forbidden\n");
    anon.send("DEVICE front-emergency TYPE relay\n");
    assert_eq!(anon.line(), "ERR forbidden\n");
    anon.send("{\"type\": \"temperature\", \"device\": \"t1\", \"value\": 99}\n");
    assert_eq!(anon.line(), "ERR forbidden\n");
    anon.send("EVENT 2 EXIT\n");
    assert_eq!(anon.line(), "ERR forbidden\n");
    anon.send("DEVICE Thermo TYPE temperature\n");
    daemon.wait_log("registered DEVICE=Thermo TYPE=temperature");
    assert_eq!(daemon.staff(), Some(1), "nothing changed");
    assert_eq!(
        daemon.status()["sensors"]["t1"]["temperature"]["value"].as_f64(),
        Some(21.5)
    );
    // The keyed connections are still there.
    let out = daemon.ctl(&["send", "plug", "PING"]);
    assert!(!out.status.success(), "no answer from our test client");
    a.line();
    let log = daemon.log();
    assert!(log.contains("hub: forbidden for 127.0.0.1:"), "{log}");
    assert!(
        log.contains("(no key (actuator)): plug belongs to key plug"),
        "{log}"
    );
}

#[test]
fn key_add_list_remove_take_effect_at_once_for_operators_only() {
    let (site, daemon) = hub("");
    let addr = daemon.hub_addr();
    let secret = add_key(&daemon, "plug", "actuator");
    // The keys file: mode 0600, the secret in it, and `key list` never shows one.
    let keys_file = site.path().join("state/keys.toml");
    let mode = std::fs::metadata(&keys_file)
        .expect("keys file")
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&keys_file)
            .expect("read")
            .contains(&secret)
    );
    let mut client = HubClient::plain(&addr);
    assert_eq!(client.auth("plug", &secret), "OK AUTH actuator\n");
    let (list, _) = text(&daemon.ctl(&["key", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(
        list,
        serde_json::json!({"keys": [{"name": "plug", "role": "actuator", "connections": 1}]})
    );
    let (table, _) = text(&daemon.ctl(&["key", "list"]));
    assert!(
        table.contains("plug") && !table.contains(&secret),
        "{table}"
    );
    let out = daemon.ctl(&["key", "add", "plug", "--role", "node"]);
    assert_eq!(out.status.code(), Some(1), "a name is added once");
    let out = daemon.ctl(&["key", "add", "bad name", "--role", "node"]);
    assert_eq!(out.status.code(), Some(1));
    // Removing it drops the connection that used it.
    let out = daemon.ctl(&["key", "remove", "plug"]);
    let (said, _) = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("key plug removed; 1 connection(s) dropped"),
        "{said}"
    );
    assert_eq!(client.line(), "", "the connection is gone");
    let mut again = HubClient::plain(&addr);
    assert_eq!(again.auth("plug", &secret), "ERR auth\n");
    assert!(
        !std::fs::read_to_string(&keys_file)
            .expect("read")
            .contains(&secret)
    );
    let out = daemon.ctl(&["key", "remove", "plug"]);
    assert_eq!(out.status.code(), Some(1));
    if is_root() {
        // nobody may observe, but keys are for operators. Anyone may connect, so the
        // daemon's own SO_PEERCRED check is what is tested.
        std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))
            .expect("chmod");
        std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        for args in [
            &["key", "add", "x", "--role", "sensor"][..],
            &["key", "list"],
            &["key", "remove", "x"],
        ] {
            let out = ctl_as_uid(&daemon.socket, 65534, args);
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains("permission denied"), "{stderr}");
        }
    }
}

#[test]
fn a_keys_file_others_can_read_stops_the_daemon_with_its_name_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let site = SiteDir::new();
    let keys = site.path().join("keys.toml");
    std::fs::write(&keys, "").expect("write");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    site.write_config(&format!(
        "{}keys = \"{}\"\n",
        site.hub_section(),
        keys.display()
    ));
    let daemon = Daemon::spawn(&site.config_path(), &site.socket());
    let (status, log) = daemon.wait_exit();
    assert!(!status.success());
    let line = format!("keys file {} has mode 0644", keys.display());
    assert!(log.contains(&line), "{log}");
}

#[test]
fn a_plain_listener_off_loopback_needs_anonymous_role_and_allow_remote_is_gone() {
    let site = SiteDir::new();
    let config = site.write_config("\n[hub]\ntcp = \"0.0.0.0:5050\"\n");
    let out = program(sited_bin())
        .arg("--check-config")
        .arg(&config)
        .arg("--plugin-dir")
        .arg(build_dir())
        .output()
        .expect("sited");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    let error: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("anonymous-role"))
        .collect();
    assert_eq!(error.len(), 1, "one line: {said}");
    assert!(error[0].contains("hub.tcp"), "{said}");
    let config = site.write_config("\n[hub]\ntcp = \"0.0.0.0:5050\"\nallow-remote = true\n");
    let out = program(sited_bin())
        .arg("--check-config")
        .arg(&config)
        .output()
        .expect("sited");
    let (stdout, stderr) = text(&out);
    assert!(
        format!("{stdout}{stderr}").contains("allow-remote is gone: set anonymous-role"),
        "{stdout}{stderr}"
    );
}

/// A door node: access only, linked to `hub` over TLS with key `front` from `secret_file`.
fn tls_node(hub: &str, fingerprint: &str, secret_file: &std::path::Path) -> (SiteDir, Daemon) {
    let node = SiteDir::new();
    node.write_config(&format!(
        "\n[link]\nhub = \"tls://{hub}\"\nfingerprint = \"{fingerprint}\"\nname = \"front\"\nsecret-file = \"{}\"\n\n[access]\nopen-secs = {DOOR_SECS}\n{SITE_DEVICES}",
        secret_file.display()
    ));
    let daemon = Daemon::start(&node);
    (node, daemon)
}

fn write_secret(path: &std::path::Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn enter(node: &Daemon) {
    node.press("entry_button");
    wait_for("the entry cycle to end", || {
        (node.status()["site"]["access"]["state"] == "idle").then_some(())
    });
}

#[test]
fn a_door_node_over_tls_counts_once_across_a_hub_restart_and_not_with_a_wrong_secret() {
    let tls_port = free_port();
    let hub_site = SiteDir::new();
    hub_site.write_config(&format!(
        "{}tls = \"127.0.0.1:{tls_port}\"\n",
        hub_site.hub_section()
    ));
    let hub = Daemon::start(&hub_site);
    let fp = fingerprint(&hub);
    let secret = add_key(&hub, "front", "node");
    let secrets = tempfile::tempdir().expect("dir");
    let secret_file = secrets.path().join("link.secret");
    // First with a wrong secret: nothing is counted, the reports wait.
    write_secret(&secret_file, &Secret::generate().expect("random").to_hex());
    let (_node_site, node) = tls_node(&format!("127.0.0.1:{tls_port}"), &fp, &secret_file);
    enter(&node);
    enter(&node);
    node.wait_log("it refused key front (ERR auth)");
    hub.wait_log("wrong mac for key front");
    assert_eq!(node.status()["site"]["access"]["link"]["outbox"], 2);
    assert_eq!(hub.staff(), Some(0));
    // The operator fixes the secret and reloads the node: both reports arrive, once.
    write_secret(&secret_file, &secret);
    let out = node.ctl(&["reload"]);
    assert!(out.status.success(), "{:?}", text(&out));
    hub.wait_staff(2);
    node.wait_outbox_empty("access");
    assert_eq!(
        node.status()["site"]["access"]["link"]["hub"],
        format!("tls://127.0.0.1:{tls_port}")
    );
    let devices = hub.status()["hub"]["clients"].clone();
    assert!(
        devices
            .as_array()
            .expect("clients")
            .iter()
            .any(|c| c["name"] == "front-access" && c["key"] == "front" && c["tls"] == true),
        "{devices}"
    );
    // The hub restarts; entries made meanwhile arrive once it is back.
    hub.signal(libc::SIGTERM);
    let (status, _) = hub.wait_exit();
    assert!(status.success());
    enter(&node);
    let hub = Daemon::start(&hub_site);
    assert_eq!(fingerprint(&hub), fp, "the certificate is kept");
    hub.wait_staff(3);
    node.wait_outbox_empty("access");
    enter(&node);
    hub.wait_staff(4);
    let lines = wait_log_lines(&hub_site, 4);
    assert_eq!(lines.len(), 4, "each entry once: {lines:?}");
}

#[test]
fn a_door_node_refuses_a_hub_with_another_certificate() {
    let (_hub_site, hub) = hub("");
    let secret = add_key(&hub, "front", "node");
    let secrets = tempfile::tempdir().expect("dir");
    let secret_file = secrets.path().join("link.secret");
    write_secret(&secret_file, &secret);
    let wrong = "ab".repeat(32);
    let (_node_site, node) = tls_node(&tls_addr(&hub), &wrong, &secret_file);
    enter(&node);
    let log = node.wait_log("not the pinned");
    assert!(log.contains(&format!("not the pinned {wrong}")), "{log}");
    assert_eq!(node.status()["site"]["access"]["link"]["outbox"], 1);
    assert_eq!(hub.staff(), Some(0));
    // Said once per outage, not at every retry (the hub sees each one).
    wait_for("three tries", || {
        (hub.log().matches("(tls)").count() >= 3).then_some(())
    });
    assert_eq!(node.log().matches("not the pinned").count(), 1);
}

/// `payload` in a `SIG1` envelope signed with `secret` under `name`, stamped `secs`.
fn sign(name: &str, secret: &str, secs: u64, nonce: &str, payload: &str) -> Vec<u8> {
    let secret = Secret::from_hex(secret).expect("secret");
    let secs = secs.to_string();
    let mac = site_daemon::keys::datagram_mac(&secret, name, &secs, nonce, payload.as_bytes());
    format!("SIG1 {name} {secs} {nonce} {mac}\n{payload}").into_bytes()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn signed_datagrams_are_taken_once_and_bad_ones_are_counted_per_source() {
    let (_site, daemon) = hub("cycle-gap-ms = 300\n");
    let udp_addr = udp_addr(&daemon);
    let secret = add_key(&daemon, "t1", "sensor");
    let sensor = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sensor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let now = unix_now();
    let packet = |seq: u32| {
        let nonce = format!("{seq:032x}");
        let payload = format!("t1,2026-11-30 10:00:00,temperature,21.5,SEQ:{seq}");
        sign("t1", &secret, now, &nonce, &payload)
    };
    for seq in 1..=10 {
        sensor.send_to(&packet(seq), &udp_addr).expect("send");
    }
    wait_for("t1's signed reading", || {
        daemon.status()["sensors"]["t1"]["temperature"]["value"]
            .as_f64()
            .filter(|v| *v == 21.5)
    });
    // The cycle closes and its STATUS goes back to the signed sender, as to any.
    let mut buf = [0u8; 128];
    let (n, _) = sensor.recv_from(&mut buf).expect("STATUS");
    assert_eq!(&buf[..n], b"STATUS RECEIVED 10/10 PACKETS");
    let good = packet(1);
    // Replayed, bad mac, stale, unknown name: each dropped and counted.
    sensor.send_to(&good, &udp_addr).expect("send");
    let mut tampered = sign(
        "t1",
        &secret,
        now,
        &"02".repeat(16),
        "t1,t,temperature,99.0,SEQ:2",
    );
    let at = tampered.len() - 8;
    tampered[at] = b'8';
    sensor.send_to(&tampered, &udp_addr).expect("send");
    let stale = sign(
        "t1",
        &secret,
        now - 120,
        &"03".repeat(16),
        "t1,t,temperature,99.0,SEQ:3",
    );
    sensor.send_to(&stale, &udp_addr).expect("send");
    let other = Secret::generate().expect("random").to_hex();
    let unknown = sign(
        "t9",
        &other,
        now,
        &"04".repeat(16),
        "t9,t,temperature,99.0,SEQ:1",
    );
    sensor.send_to(&unknown, &udp_addr).expect("send");
    // Unsigned under the key's name: forbidden.
    sensor
        .send_to(b"t1,t,temperature,99.0,SEQ:4", &udp_addr)
        .expect("send");
    let counts = wait_for("the drops to be counted", || {
        let out = daemon.ctl(&["devices", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&text(&out).0).ok()?;
        let source = list["rejected"].as_array()?.first()?.clone();
        (source["bad_mac"] == 2
            && source["replayed"] == 1
            && source["stale"] == 1
            && source["forbidden"] == 1)
            .then_some(source)
    });
    assert_eq!(counts["source"], "127.0.0.1");
    assert_eq!(
        daemon.status()["sensors"]["t1"]["temperature"]["value"].as_f64(),
        Some(21.5),
        "nothing dropped was taken"
    );
    let (table, _) = text(&daemon.ctl(&["devices"]));
    assert!(
        table.contains(
            "datagrams dropped from 127.0.0.1: bad mac 2, stale 1, replayed 1, forbidden 1"
        ),
        "{table}"
    );
    let log = daemon.log();
    for why in [
        "(replayed, 1 so far)",
        "wrong mac for key t1",
        "no key named t9",
        "from the hub's clock",
    ] {
        assert!(log.contains(why), "{why}: {log}");
    }
}

#[test]
fn with_anonymous_role_none_only_signed_datagrams_count() {
    let (_site, daemon) = hub("anonymous-role = \"none\"\n");
    let udp_addr = udp_addr(&daemon);
    let secret = add_key(&daemon, "t1", "sensor");
    let sensor = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sensor
        .send_to(b"Sensor01,t,temperature,30.0,SEQ:1", &udp_addr)
        .expect("send");
    let signed = sign(
        "t1",
        &secret,
        unix_now(),
        &"0a".repeat(16),
        "{\"type\": \"temperature\", \"device\": \"t1\", \"value\": 22}",
    );
    sensor.send_to(&signed, &udp_addr).expect("send");
    wait_for("the signed JSON reading", || {
        daemon.status()["sensors"]["t1"]["temperature"]["value"].as_f64()
    });
    daemon.wait_log("unsigned, and anonymous-role is none");
    assert!(daemon.status()["sensors"]["Sensor01"].is_null());
    // Nor may a client without a key do anything on the plain port, but ask if the hub is
    // alive: PING needs no role.
    let mut anon = HubClient::plain(&daemon.hub_addr());
    anon.send("DEVICE Thermo TYPE temperature\n");
    assert_eq!(anon.line(), "ERR forbidden\n");
    anon.send("PING 42\n");
    assert_eq!(anon.line(), "PONG 42\n");
}

/// `python3 tests/reference_client.py <args>`, its output piped.
fn reference_client(args: &[&str]) -> Reap {
    let child = std::process::Command::new("python3")
        .arg(workspace_root().join("tests/reference_client.py"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    Reap(child)
}

#[test]
fn the_python_reference_client_speaks_the_protocol_from_protocol_md() {
    let mut check = reference_client(&["--self-test"]);
    let (status, said) = check.finish(DEADLINE);
    assert!(status.success(), "{said}");
    let (_site, daemon) = hub("cycle-gap-ms = 300\n");
    let fp = fingerprint(&daemon);
    let secret = add_key(&daemon, "plug", "actuator");
    let files = tempfile::tempdir().expect("dir");
    let secret_file = files.path().join("plug.secret");
    write_secret(&secret_file, &secret);
    let tls = tls_addr(&daemon);
    let udp = udp_addr(&daemon);
    let secret_path = secret_file.display().to_string();
    let mut client = reference_client(&[
        "--tls",
        &tls,
        "--fingerprint",
        &fp,
        "--name",
        "plug",
        "--secret-file",
        &secret_path,
        "--udp",
        &udp,
        "--value",
        "23.5",
    ]);
    // Registered once the hub lists it; then the operator's command goes out.
    wait_for("the reference client to register", || {
        let clients = daemon.status()["hub"]["clients"].clone();
        clients
            .as_array()?
            .iter()
            .any(|c| c["name"] == "plug" && c["key"] == "plug" && c["tls"] == true)
            .then_some(())
    });
    let out = daemon.ctl(&["send", "plug", "SET_INTERVAL", "3"]);
    let (reply, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(reply, "ACK SET_INTERVAL 3\n");
    let (status, said) = client.finish(DEADLINE);
    assert!(status.success(), "{said}");
    for step in [
        "connected over TLS 1.3, certificate pinned",
        "authenticated as plug (actuator)",
        "answered SET_INTERVAL 3",
        "STATUS RECEIVED 10/10 PACKETS",
    ] {
        assert!(said.contains(step), "{step}: {said}");
    }
    assert_eq!(
        daemon.status()["sensors"]["plug"]["temperature"]["value"].as_f64(),
        Some(23.5)
    );
    // With another fingerprint pinned, it refuses the hub.
    let mut wrong = reference_client(&[
        "--tls",
        &tls,
        "--fingerprint",
        &"cd".repeat(32),
        "--name",
        "plug",
        "--secret-file",
        &secret_path,
    ]);
    let (status, said) = wrong.finish(DEADLINE);
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("not the pinned"), "{said}");
}

/// A network namespace of the test's own, joined to this one by a veth pair: the hub listens
/// on this side's address, and a client in the namespace is a host on the LAN (not
/// loopback, not the hub's own address). Removed on drop.
struct Lan {
    name: String,
    /// This side's address (the hub's) and the namespace's (the client's).
    hub_ip: String,
    client_ip: String,
}

impl Lan {
    fn new() -> Option<Lan> {
        if !is_root() || std::process::Command::new("ip").arg("-V").output().is_err() {
            return None;
        }
        let tag = std::process::id() % 100_000;
        let net = (std::process::id() / 7) % 250 + 1;
        let lan = Lan {
            name: format!("sited-t{tag}"),
            hub_ip: format!("10.231.{net}.1"),
            client_ip: format!("10.231.{net}.2"),
        };
        let (a, b) = (format!("sdt{tag}a"), format!("sdt{tag}b"));
        let ns = lan.name.clone();
        let steps: Vec<Vec<String>> = [
            vec!["netns", "add", &ns],
            vec!["link", "add", &a, "type", "veth", "peer", "name", &b],
            vec!["link", "set", &b, "netns", &ns],
            vec!["addr", "add", &format!("{}/30", lan.hub_ip), "dev", &a],
            vec!["link", "set", &a, "up"],
            vec![
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", lan.client_ip),
                "dev",
                &b,
            ],
            vec!["-n", &ns, "link", "set", &b, "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ]
        .iter()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .collect();
        for step in steps {
            let out = std::process::Command::new("ip")
                .args(&step)
                .output()
                .expect("ip");
            assert!(out.status.success(), "ip {step:?}: {:?}", text(&out));
        }
        Some(lan)
    }

    /// Runs a Python program in the namespace; its output.
    fn python(&self, program: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", program])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// From another host: CHAL/AUTH with (name, secret) on the plain port, then `then`; prints
/// every line the hub sends until it closes or goes quiet.
const LAN_CLIENT: &str = r#"
import hashlib, hmac, socket, sys
host, port, name, secret, then = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection((host, port), timeout=5)
f = s.makefile("rwb")
if name != "-":
    f.write(b"CHAL\n"); f.flush()
    nonce = f.readline().decode().split()[1]
    mac = hmac.new(bytes.fromhex(secret), ("sited-auth-v1\n" + name + "\n" + nonce).encode(), hashlib.sha256).hexdigest()
    f.write(("AUTH %s %s\n" % (name, mac)).encode()); f.flush()
    print(f.readline().decode().strip(), flush=True)
f.write(then.replace("|", "\n").encode() + b"\n"); f.flush()
s.settimeout(1)
try:
    for line in f:
        print(line.decode().strip(), flush=True)
except OSError:
    pass
"#;

#[test]
fn from_the_lan_a_node_key_needs_tls_and_clients_without_a_key_get_their_role() {
    let Some(lan) = Lan::new() else {
        eprintln!("skipped: needs root and iproute2 to make a network namespace");
        return;
    };
    let site = SiteDir::new();
    site.write_config(&format!(
        "\n[hub]\ntcp = \"{}:0\"\nanonymous-role = \"node\"\nevent-log = \"{}\"\n",
        lan.hub_ip,
        site.event_log_path().display()
    ));
    let daemon = Daemon::start(&site);
    let port = daemon
        .hub_addr()
        .rsplit_once(':')
        .expect("port")
        .1
        .to_string();
    let node = add_key(&daemon, "front", "node");
    let plug = add_key(&daemon, "plug", "actuator");
    let run = |name: &str, secret: &str, then: &str| {
        let out = lan.python(LAN_CLIENT, &[&lan.hub_ip, &port, name, secret, then]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        stdout
    };
    // A node key over plain TCP from the LAN: refused, as anyone on the path could take the
    // connection over after AUTH.
    let said = run(
        "front",
        &node,
        "DEVICE front-access TYPE access-control|EVENT 1 ENTRY",
    );
    assert_eq!(said.lines().next(), Some("ERR auth"), "{said}");
    daemon.wait_log(&format!("authentication failed from {}:", lan.client_ip));
    daemon.wait_log("key front is a node key, accepted only over TLS or from this machine");
    // An actuator key is fine there, and so is a device without one, as far as actuators go:
    // `anonymous-role = "node"` is for clients on the hub's own machine only.
    let said = run("plug", &plug, "DEVICE plug TYPE relay");
    assert_eq!(said.lines().next(), Some("OK AUTH actuator"), "{said}");
    let said = run("-", "", "DEVICE Thermo TYPE temperature|EVENT 1 ENTRY");
    assert_eq!(said.trim(), "ERR forbidden", "{said}");
    daemon.wait_log("registered DEVICE=Thermo TYPE=temperature");
    assert_eq!(daemon.staff(), Some(0));
}
