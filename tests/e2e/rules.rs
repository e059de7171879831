//! Threshold rules (seed 002): hub readings switch a device with hysteresis, share the office
//! fan with occupancy (whoever wants it on wins), and keep their state across a restart.

use site_tests::*;
use std::io::Write;
use std::net::UdpSocket;

/// The office and a `hot` rule on its fan, with a hub on UDP and TCP.
fn office_with_rule(site: &SiteDir) -> Daemon {
    site.write_config(&format!(
        "{}udp = \"127.0.0.1:0\"\n\n[office]\n\n[[rule]]\nname = \"hot\"\nsensor = \"Sensor01\"\nquantity = \"temperature\"\nabove = 25.0\nhysteresis = 0.5\ndevice = \"office_fan\"\n{SITE_DEVICES}",
        site.hub_section()
    ));
    Daemon::start(site)
}

struct Sensor {
    socket: UdpSocket,
    seq: u8,
}

impl Sensor {
    fn new(daemon: &Daemon) -> Sensor {
        let hub = daemon.status()["hub"]["udp"]["listen"]
            .as_str()
            .expect("udp listen address")
            .to_string();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(hub).expect("connect");
        Sensor { socket, seq: 0 }
    }

    /// Sends one seed-001 datagram and waits until the hub has stored it, which is also when
    /// the rules have seen it.
    fn reading(&mut self, daemon: &Daemon, value: f64) {
        self.seq = self.seq % 10 + 1;
        let datagram = format!(
            "Sensor01,2026-11-22 10:00:{:02},temperature,{value},SEQ:{}",
            self.seq, self.seq
        );
        self.socket.send(datagram.as_bytes()).expect("send");
        wait_reading(daemon, value);
    }
}

fn wait_reading(daemon: &Daemon, value: f64) {
    wait_for(&format!("the hub to store {value}"), || {
        (daemon.status()["sensors"]["Sensor01"]["temperature"]["value"] == value).then_some(())
    });
}

fn rule(daemon: &Daemon) -> serde_json::Value {
    daemon.status()["site"]["rules"][0].clone()
}

#[test]
fn a_rule_switches_the_fan_on_and_off_with_hysteresis() {
    let site = SiteDir::new();
    let daemon = office_with_rule(&site);
    assert_eq!(daemon.state("office_fan"), "off");
    assert_eq!(rule(&daemon)["state"], "idle");
    let mut sensor = Sensor::new(&daemon);

    sensor.reading(&daemon, 25.0);
    assert_eq!(daemon.state("office_fan"), "off", "25.0 is not above 25");
    sensor.reading(&daemon, 26.0);
    daemon.wait_state("office_fan", "on");
    assert_eq!(rule(&daemon)["state"], "active");
    daemon.wait_log("rule hot: active (Sensor01 temperature 26 > 25); office_fan on");

    sensor.reading(&daemon, 24.8);
    assert_eq!(
        daemon.state("office_fan"),
        "on",
        "24.8 is inside the hysteresis"
    );
    sensor.reading(&daemon, 24.5);
    assert_eq!(daemon.state("office_fan"), "on", "24.5 is not below 24.5");
    sensor.reading(&daemon, 24.4);
    daemon.wait_state("office_fan", "off");
    assert_eq!(rule(&daemon)["state"], "idle");
    assert_eq!(rule(&daemon)["last"], 24.4);
    assert_eq!(site.pins()["25"]["level"], "low", "the relay pin follows");

    // Seed 002's JSON readings over a TCP line drive the same rule.
    let mut tcp = std::net::TcpStream::connect(daemon.hub_addr()).expect("connect");
    tcp.write_all(b"{\"type\": \"temperature\", \"device\": \"Sensor01\", \"value\": 30.5}\n")
        .expect("send");
    daemon.wait_state("office_fan", "on");
    let (ok, out) = {
        let out = daemon.ctl(&["status"]);
        (out.status.success(), text(&out).0)
    };
    assert!(ok, "{out}");
    assert!(
        out.contains("rule hot: ACTIVE, Sensor01 temperature 30.5 (on above 25, off below 24.5) -> office_fan"),
        "{out}"
    );
    assert!(
        out.contains("office:    empty, unlocked, light off, fan on"),
        "{out}"
    );
}

#[test]
fn the_office_and_a_rule_share_the_fan_and_whoever_wants_it_on_wins() {
    let site = SiteDir::new();
    let daemon = office_with_rule(&site);
    let mut sensor = Sensor::new(&daemon);
    // Occupied: light and fan on, whatever the rule says.
    daemon.sim("office_door", "open");
    daemon.sim("office_door", "closed");
    daemon.wait_state("office_fan", "on");
    sensor.reading(&daemon, 26.0);
    sensor.reading(&daemon, 20.0);
    assert_eq!(rule(&daemon)["state"], "idle");
    assert_eq!(
        daemon.state("office_fan"),
        "on",
        "the office still wants it"
    );
    daemon.wait_log("rule hot: idle (Sensor01 temperature 20 < 24.5); office_fan stays on (office also wants it on)");

    // Hot, then the office empties: the light goes off, the fan stays on for the rule.
    sensor.reading(&daemon, 27.0);
    daemon.sim("office_door", "open");
    daemon.sim("office_door", "closed");
    daemon.wait_state("office_light", "off");
    assert_eq!(daemon.state("office_fan"), "on", "the rule still wants it");
    assert_eq!(daemon.status()["site"]["office"]["fan"], "on");

    // Cool again: nobody wants the fan.
    sensor.reading(&daemon, 22.0);
    daemon.wait_state("office_fan", "off");
}

#[test]
fn an_active_rule_survives_a_restart() {
    let site = SiteDir::new();
    let daemon = office_with_rule(&site);
    let mut sensor = Sensor::new(&daemon);
    sensor.reading(&daemon, 28.0);
    daemon.wait_state("office_fan", "on");
    daemon.signal(libc::SIGTERM);
    let _ = daemon.wait_exit();
    assert_eq!(
        site.pins()["25"]["level"],
        "low",
        "fan off while sited is down"
    );

    let daemon = office_with_rule(&site);
    assert_eq!(daemon.state("office_fan"), "on");
    assert_eq!(rule(&daemon)["state"], "active");
    daemon.wait_log("rule hot: active at start");
    // And it still goes idle on a cool reading.
    let mut sensor = Sensor::new(&daemon);
    sensor.reading(&daemon, 21.0);
    daemon.wait_state("office_fan", "off");
}

#[test]
fn a_reload_that_removes_a_rule_switches_its_device_off() {
    let site = SiteDir::new();
    let daemon = office_with_rule(&site);
    let mut sensor = Sensor::new(&daemon);
    sensor.reading(&daemon, 28.0);
    daemon.wait_state("office_fan", "on");
    // Same node without the rule (and without the office, so nothing else wants the fan).
    site.write_config(&format!(
        "{}udp = \"127.0.0.1:0\"\n{SITE_DEVICES}",
        site.hub_section()
    ));
    let out = daemon.ctl(&["reload"]);
    assert!(out.status.success(), "{:?}", text(&out));
    daemon.wait_state("office_fan", "off");
    assert!(daemon.status()["site"]["rules"].is_null());
}
