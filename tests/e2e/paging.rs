//! Long lists come in pages, so no control request holds the loop for the whole of them:
//! `status` carries the first few hub clients, senders and sensors with their counts, and
//! `devices` and `sensors` are served a page (at most `MAX_PAGE` entries) at a time, which
//! sitectl follows to the end.

use site_proto::{MAX_PAGE, STATUS_LIST};
use site_tests::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};

const TCP_DEVICES: usize = 230;
const UDP_SENSORS: usize = 120;

fn busy_hub() -> (SiteDir, Daemon, Vec<TcpStream>) {
    let site = SiteDir::new();
    site.write_config(&format!("{}udp = \"127.0.0.1:0\"\n", site.hub_section()));
    let daemon = Daemon::start(&site);
    let udp = daemon.status()["hub"]["udp"]["listen"]
        .as_str()
        .expect("udp")
        .to_string();
    let clients: Vec<TcpStream> = (0..TCP_DEVICES)
        .map(|i| {
            let mut c = TcpStream::connect(daemon.hub_addr()).expect("connect");
            c.write_all(format!("DEVICE tcp{i:03} TYPE temperature\n").as_bytes())
                .expect("register");
            c
        })
        .collect();
    let sensor = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..UDP_SENSORS {
        sensor
            .send_to(
                format!("udp{i:03},2026-11-30 10:00:01,temperature,20.5,SEQ:1").as_bytes(),
                &udp,
            )
            .expect("send");
    }
    wait_for("every device registered and every sensor heard", || {
        let s = daemon.status();
        (s["hub"]["client_count"] == TCP_DEVICES
            && s["hub"]["udp"]["sender_count"] == UDP_SENSORS
            && s["sensor_count"] == UDP_SENSORS
            && s["hub"]["udp"]["datagrams"] == UDP_SENSORS)
            .then_some(())
    });
    (site, daemon, clients)
}

#[test]
fn status_summarises_and_devices_and_sensors_come_in_pages_sitectl_follows() {
    let (_site, daemon, _clients) = busy_hub();
    let status = daemon.status();
    assert_eq!(
        status["hub"]["clients"].as_array().map(Vec::len),
        Some(STATUS_LIST)
    );
    assert_eq!(status["hub"]["clients"][0]["name"], "tcp000", "by name");
    assert_eq!(
        status["hub"]["udp"]["streams"].as_array().map(Vec::len),
        Some(STATUS_LIST)
    );
    assert_eq!(
        status["sensors"].as_object().map(|m| m.len()),
        Some(STATUS_LIST)
    );
    let status_text = text(&daemon.ctl(&["status"])).0;
    assert!(
        status_text.contains(&format!("{TCP_DEVICES} clients\n"))
            && status_text.contains(&format!(
                "... and {} more (sitectl devices",
                TCP_DEVICES - 10
            ))
            && status_text.contains(&format!(
                "sensor ... and {} more (sitectl sensors",
                UDP_SENSORS - STATUS_LIST
            )),
        "{status_text}"
    );

    // One page by hand: at most MAX_PAGE entries, the total, and where the next starts.
    let mut control = Control::connect(&daemon);
    let page = control.ask(r#"{"cmd":"devices"}"#);
    let result = &page["result"];
    assert_eq!(result["devices"].as_array().map(Vec::len), Some(MAX_PAGE));
    assert_eq!(result["total"], TCP_DEVICES + UDP_SENSORS);
    assert_eq!(result["next"], format!("tcp:tcp{:03}", MAX_PAGE - 1));
    let small = control.ask(r#"{"cmd":"devices","limit":5,"after":"tcp:tcp228"}"#);
    let names: Vec<&str> = small["result"]["devices"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["tcp229", "udp000", "udp001", "udp002", "udp003"],
        "TCP, then UDP"
    );
    let bad = control.ask(r#"{"cmd":"devices","after":"nonsense"}"#);
    assert_eq!(bad["ok"], false, "{bad}");

    // sitectl follows the pages: every device once, in order.
    let out = daemon.ctl(&["devices", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<String> = all["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..TCP_DEVICES)
        .map(|i| format!("tcp{i:03}"))
        .chain((0..UDP_SENSORS).map(|i| format!("udp{i:03}")))
        .collect();
    assert_eq!(names, expected);

    let out = daemon.ctl(&["sensors", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sensors: BTreeSet<&str> = all["sensors"]
        .as_object()
        .expect("sensors")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(sensors.len(), UDP_SENSORS);
    assert_eq!(all["sensors"]["udp119"]["temperature"]["value"], 20.5);
    let lines = text(&daemon.ctl(&["sensors"])).0;
    assert_eq!(lines.lines().count(), UDP_SENSORS, "{lines}");
    assert!(
        lines.starts_with("sensor udp000: temperature=20.5 (at "),
        "{lines}"
    );
}
