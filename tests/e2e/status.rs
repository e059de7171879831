//! The status document is typed (`site_proto::Status`): what a real daemon sends reads into the
//! types and writes back byte for byte, so nothing sitectl, the web API or the MQTT bridge
//! reads is a field the types do not know.

use site_proto::Status;
use site_tests::*;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};

/// `status --json` exactly as sitectl printed it, and parsed into the types.
fn raw_status(daemon: &Daemon) -> (String, Status) {
    let out = daemon.ctl(&["status", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let raw = String::from_utf8(out.stdout).expect("UTF-8");
    let typed: Status = serde_json::from_str(&raw).expect("the status reads into the types");
    (raw, typed)
}

fn round_trips(raw: &str, typed: &Status) {
    // Unknown fields land nowhere (or in `site.other`, which a daemon of this build leaves
    // empty); so an untyped field would be lost here and the texts would differ.
    assert!(typed.site.as_ref().is_none_or(|s| s.other.is_empty()));
    let again =
        serde_json::to_string(&serde_json::to_value(typed).expect("to value")).expect("to text");
    assert_eq!(again, raw.trim_end(), "the status does not round-trip");
}

#[test]
fn a_real_daemons_status_round_trips_through_the_types() {
    let hub_site = SiteDir::new();
    hub_site.write_config(&format!(
        "{}udp = \"127.0.0.1:0\"\n{SITE_SECTIONS}\n[[rule]]\nname = \"hot\"\nsensor = \"Sensor01\"\nquantity = \"temperature\"\nabove = 25.0\nhysteresis = 0.5\ndevice = \"office_fan\"\n{SITE_DEVICES}",
        hub_site.hub_section_for_anonymous_nodes()
    ));
    let hub = Daemon::start(&hub_site);
    let (_, typed) = raw_status(&hub);
    let udp = typed
        .hub
        .as_ref()
        .and_then(|h| h.udp.as_ref())
        .expect("udp")
        .listen
        .clone();

    // A door node reporting to it (a link), a TCP device, a sensor reading and a malformed
    // datagram, so every part of the document is there.
    let door_site = SiteDir::new();
    door_site.write_config(&format!(
        "\n[access]\nopen-secs = {DOOR_SECS}\nhub = \"{}\"\nname = \"door-node\"\n{SITE_DEVICES}",
        hub.hub_addr()
    ));
    let door = Daemon::start(&door_site);
    let mut device = TcpStream::connect(hub.hub_addr()).expect("connect");
    device
        .write_all(b"DEVICE Thermo TYPE temperature\n")
        .expect("register");
    let sensor = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sensor
        .send_to(b"Sensor01,2026-11-30 10:00:01,temperature,26.5,SEQ:1", &udp)
        .expect("send");
    sensor.send_to(b"not a reading", &udp).expect("send");
    wait_for("the reading, the client, the link and the rule", || {
        let (_, s) = raw_status(&hub);
        let hub_part = s.hub.as_ref()?;
        let udp = hub_part.udp.as_ref()?;
        let rule = s.site.as_ref()?.rules.as_ref()?.first()?;
        (s.sensors.as_ref()?.contains_key("Sensor01")
            && hub_part.clients.iter().any(|c| c.name == "Thermo")
            && hub_part.clients.iter().any(|c| c.name == "door-node")
            && !udp.malformed.is_empty()
            && rule.last == Some(26.5))
        .then_some(())
    });
    wait_for("the door node's link", || {
        let (_, s) = raw_status(&door);
        let link = s.site?.access?.link?;
        link.connected.then_some(())
    });

    for daemon in [&hub, &door] {
        let (raw, typed) = raw_status(daemon);
        round_trips(&raw, &typed);
    }
    let (_, typed) = raw_status(&hub);
    let site = typed.site.expect("site");
    assert_eq!(site.rules.expect("rules")[0].state, "active");
    assert_eq!(
        site.office.expect("office").fan,
        "on",
        "the rule drives the office fan"
    );
    assert_eq!(
        typed.sensors.expect("sensors")["Sensor01"]["temperature"].value,
        26.5
    );
    let (_, door_status) = raw_status(&door);
    let link = door_status.site.and_then(|s| s.access).and_then(|a| a.link);
    assert_eq!(
        link.map(|l| (l.name, l.outbox)),
        Some(("door-node".to_string(), 0))
    );
}
