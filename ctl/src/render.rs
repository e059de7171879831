//! Turns sited's answers into text for a person: the status header and device table, the
//! version lines. Pure functions of the JSON result, so they are tested without a socket.

use serde_json::Value;
use site_proto::{
    AccessStatus, DeviceStatus, LinkStatus, OfficeStatus, PROTOCOL_VERSION, RuleStatus, Status,
    VersionInfo,
};
use std::fmt::Write as _;

/// The parts of a status result this sitectl knows how to show; newer daemons add more.
const KNOWN_STATUS_KEYS: [&str; 7] = [
    "daemon", "devices", "staff", "site", "hub", "sensors", "store",
];

/// Hub clients listed one per line in `status` before the rest are summed up.
const STATUS_CLIENTS: usize = 10;

/// The human form of a `status` result: header, blank line, table. Fields this version does not
/// know are ignored; top-level sections it does not know are named in a closing note so the
/// user knows `--json` has more.
pub fn status(result: &Value) -> Result<String, String> {
    let status: Status = serde_json::from_value(result.clone()).map_err(|e| e.to_string())?;
    let daemon = &status.daemon;
    let mut out = String::new();
    let backend = if daemon.backend == "sim" {
        "sim (simulated pins)".to_string()
    } else {
        one_line(&daemon.backend)
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "sited {} (pid {})",
        one_line(&daemon.version),
        daemon.pid
    );
    let _ = writeln!(out, "backend: {backend}");
    if let Some(board) = &daemon.board {
        let read: Vec<String> = board
            .read
            .iter()
            .map(|r| format!("{}: {}", one_line(&r.file), one_line(&r.said)))
            .collect();
        let _ = writeln!(
            out,
            "board: {} (read {})",
            board
                .model
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "not a Raspberry Pi".into()),
            read.join("; ")
        );
    }
    let _ = writeln!(out, "config:  {}", one_line(&daemon.config));
    let _ = writeln!(out, "uptime:  {}", uptime(daemon.uptime_secs));
    out.push('\n');
    site(&mut out, &status);

    if status.devices.is_empty() {
        out.push_str("no devices configured\n");
    } else {
        let mut rows = vec![["NAME", "KIND", "PIN", "ROLE", "STATE", "DETAIL"].map(String::from)];
        // `devices` is a BTreeMap, so the rows come out sorted by name.
        rows.extend(
            status
                .devices
                .iter()
                .map(|(name, dev)| device_row(name, dev)),
        );
        table(&mut out, &rows);
    }

    let unknown: Vec<&str> = result
        .as_object()
        .map(|o| {
            o.keys()
                .map(String::as_str)
                .filter(|k| !KNOWN_STATUS_KEYS.contains(k))
                .collect()
        })
        .unwrap_or_default();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|k| one_line(k)).collect();
        let _ = writeln!(
            out,
            "\nnot shown by this sitectl: {} (see sitectl status --json)",
            names.join(", ")
        );
    }
    Ok(out)
}

/// The site block: staff on the premises, one line per module (with its hub link), the hub,
/// and a line for each file the writer cannot write.
fn site(out: &mut String, status: &Status) {
    let mut any = false;
    for stall in status.store.iter().flat_map(|s| &s.stalled) {
        let file = std::path::Path::new(&stall.file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| stall.file.clone());
        // "No space left on device (os error 28)": the number helps nobody here.
        let error = match stall.error.rsplit_once(" (os error ") {
            Some((text, _)) => text,
            None => &stall.error,
        };
        let waits = if stall.best_effort {
            "lines wait, nothing else does"
        } else {
            "acknowledgements wait"
        };
        let _ = writeln!(
            out,
            "store: cannot write {} since {}: {} ({}; {waits})",
            one_line(&file),
            one_line(&stall.since),
            one_line(error),
            one_line(&stall.file)
        );
        any = true;
    }
    if let Some(staff) = status.staff {
        let _ = writeln!(out, "staff on premises: {staff}");
        any = true;
    }
    if let Some(site) = &status.site {
        // The flow's order (in, out, emergency, office); modules a newer sited adds come
        // after, as JSON.
        let modules = [
            site.access
                .as_ref()
                .map(|a| ("access", access_line(a), a.link.as_ref())),
            site.emergency.as_ref().map(|e| {
                let line = format!("door {}, siren {}", one_line(&e.door), one_line(&e.siren));
                ("emergency", line, e.link.as_ref())
            }),
            site.office
                .as_ref()
                .map(|o| ("office", office_line(o), o.link.as_ref())),
        ];
        for (name, line, link) in modules.into_iter().flatten() {
            let _ = writeln!(out, "{:<10} {line}", format!("{name}:"));
            if let Some(link) = link {
                link_line(out, link);
            }
            any = true;
        }
        for (name, m) in &site.other {
            let _ = writeln!(
                out,
                "{:<10} {}",
                format!("{}:", one_line(name)),
                one_line(&m.to_string())
            );
            any = true;
        }
        for rule in site.rules.iter().flatten() {
            let _ = writeln!(out, "{}", rule_line(rule));
            any = true;
        }
    }
    if let Some(hub) = &status.hub {
        let clients = &hub.clients;
        let udp = hub
            .udp
            .as_ref()
            .map(|u| format!(", udp {}", one_line(&u.listen)))
            .unwrap_or_default();
        let tls = hub
            .tls
            .as_ref()
            .map(|t| format!(", tls {}", one_line(t)))
            .unwrap_or_default();
        // An older sited sent every client and no count.
        let count = hub.client_count.max(clients.len());
        let _ = writeln!(
            out,
            "hub: listening on {}{tls}{udp}, {count} client{}",
            one_line(&hub.listen),
            if count == 1 { "" } else { "s" }
        );
        // A hub with thousands of devices: the first few here, all of them in `sitectl devices`.
        for c in clients.iter().take(STATUS_CLIENTS) {
            // How it proved itself: "key front, tls".
            let how = match (&c.key, c.tls) {
                (Some(key), true) => format!(", key {}, tls", one_line(key)),
                (Some(key), false) => format!(", key {}", one_line(key)),
                (None, true) => ", tls".to_string(),
                (None, false) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} ({}) from {}{how}, connected for {}",
                one_line(&c.name),
                one_line(&c.kind),
                one_line(&c.address),
                uptime(c.connected_secs)
            );
        }
        let shown = clients.len().min(STATUS_CLIENTS);
        if count > shown {
            let _ = writeln!(
                out,
                "  ... and {} more (sitectl devices lists them all)",
                count - shown
            );
        }
        any = true;
    }
    let sensors = status.sensors.as_ref();
    for (device, quantities) in sensors.into_iter().flatten() {
        let _ = writeln!(out, "{}", sensor_line(device, quantities));
        any = true;
    }
    let shown = sensors.map_or(0, |s| s.len());
    if let Some(count) = status.sensor_count
        && count > shown
    {
        let _ = writeln!(
            out,
            "sensor ... and {} more (sitectl sensors lists them all)",
            count - shown
        );
    }
    if any {
        out.push('\n');
    }
}

/// `sensor Sensor01: temperature=21.5 (at 2026-11-30 10:00:01)`
fn sensor_line(
    device: &str,
    quantities: &std::collections::BTreeMap<String, site_proto::SensorReading>,
) -> String {
    let readings: Vec<String> = quantities
        .iter()
        .map(|(q, r)| {
            format!(
                "{}={} (at {})",
                one_line(q),
                detail_value(&Value::from(r.value)),
                one_line(&r.at)
            )
        })
        .collect();
    format!("sensor {}: {}", one_line(device), readings.join(", "))
}

/// The human form of a `sensors` result: a line per sensor, as `status` shows the first few.
pub fn sensors(result: &Value) -> String {
    let sensors: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, site_proto::SensorReading>,
    > = result
        .get("sensors")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    if sensors.is_empty() {
        return "no sensor has reported yet\n".into();
    }
    sensors
        .iter()
        .map(|(device, q)| sensor_line(device, q) + "\n")
        .collect()
}

/// `idle`, `entry (entry_door open)`, or the emergency release.
fn access_line(a: &AccessStatus) -> String {
    let open: Vec<String> = a.open.iter().map(|d| one_line(d)).collect();
    match (a.state.as_str(), open.is_empty()) {
        ("released", _) => "released (emergency: both doors open)".to_string(),
        (s, false) => format!("{} ({} open)", one_line(s), open.join(", ")),
        (s, true) => one_line(s),
    }
}

fn office_line(o: &OfficeStatus) -> String {
    format!(
        "{}, {}, light {}, fan {}",
        if o.occupied { "occupied" } else { "empty" },
        if o.locked { "locked" } else { "unlocked" },
        one_line(&o.light),
        one_line(&o.fan)
    )
}

/// `  -> hub 127.0.0.1:5050 as pi-entry: connected, outbox 0, rtt 0.4 ms` (the last
/// heartbeat's round trip, for a link that pings), upper case when the link is
/// down or refused, so it stands out in a screenful of lower-case states.
fn link_line(out: &mut String, link: &LinkStatus) {
    let _ = write!(
        out,
        "  -> hub {} as {}: {}, outbox {}",
        one_line(&link.hub),
        one_line(&link.name),
        if link.connected {
            "connected"
        } else {
            "DISCONNECTED"
        },
        link.outbox
    );
    if let Some(ms) = link.rtt_ms.filter(|_| link.connected) {
        let _ = write!(out, ", rtt {ms:.1} ms");
    }
    match &link.refused {
        Some(why) => {
            let _ = writeln!(out, ", REFUSED: {}", one_line(why));
        }
        None => out.push('\n'),
    }
}

/// `rule hot: ACTIVE, Sensor01 temperature 26.1 (on above 25, off below 24.5) -> office_fan`:
/// upper case when active, like a dead link, because it is the state that drives a device.
fn rule_line(rule: &RuleStatus) -> String {
    let state = match rule.state.as_str() {
        "active" => "ACTIVE".to_string(),
        other => one_line(other),
    };
    let bounds = format!(
        " (on above {}, off below {})",
        rule.above,
        rule.above - rule.hysteresis
    );
    let (name, sensor, quantity, device) = (
        one_line(&rule.name),
        one_line(&rule.sensor),
        one_line(&rule.quantity),
        one_line(&rule.device),
    );
    let last = match rule.last {
        Some(v) => detail_value(&Value::from(v)),
        // Active without a reading in this run: the state file brought it back.
        None if state == "ACTIVE" => {
            return format!(
                "rule {name}: ACTIVE (restored at start; no reading since), {sensor} {quantity}{bounds} -> {device}"
            );
        }
        None => "no reading yet".into(),
    };
    format!("rule {name}: {state}, {sensor} {quantity} {last}{bounds} -> {device}")
}

/// The human form of a `devices` result: one row per TCP device or UDP sender.
pub fn devices(result: &Value) -> String {
    let list = result
        .get("devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() && result.get("rejected").is_none() {
        return "no devices have reported to this hub\n".to_string();
    }
    let field = |d: &Value, k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_else(|| "-".into())
    };
    let mut rows =
        vec![["NAME", "VIA", "TYPE", "ADDRESS", "LAST-SEEN", "DETAIL"].map(String::from)];
    for d in &list {
        let detail = match d.get("stats").filter(|s| s.is_object()) {
            Some(s) => {
                let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
                format!(
                    "{}, packets={} duplicates={} cycles={} complete={} missing={}",
                    field(d, "state"),
                    n("packets"),
                    n("duplicates"),
                    n("cycles"),
                    n("complete_cycles"),
                    n("missing")
                )
            }
            None => match d.get("connected_secs").and_then(Value::as_u64) {
                Some(secs) => {
                    let key = d
                        .get("key")
                        .and_then(Value::as_str)
                        .map(|k| format!(", key {}", one_line(k)))
                        .unwrap_or_default();
                    format!("{} for {}{key}", field(d, "state"), uptime(secs))
                }
                None => field(d, "state"),
            },
        };
        rows.push([
            field(d, "name"),
            field(d, "via"),
            field(d, "type"),
            field(d, "address"),
            field(d, "last_seen"),
            detail,
        ]);
    }
    let mut out = String::new();
    table(&mut out, &rows);
    for r in result
        .get("rejected")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "datagrams dropped from {}: bad mac {}, stale {}, replayed {}, forbidden {}\n",
            field(r, "source"),
            n("bad_mac"),
            n("stale"),
            n("replayed"),
            n("forbidden")
        ));
    }
    out
}

fn device_row(name: &str, dev: &DeviceStatus) -> [String; 6] {
    let faulted = dev.fault.is_some() || dev.state == "faulted";
    let pairs = dev
        .detail
        .iter()
        .map(|(k, v)| format!("{}={}", one_line(k), detail_value(v)));
    let detail: Vec<String> = if faulted {
        let reason = dev.fault.as_deref().unwrap_or("no reason given");
        std::iter::once(format!("fault: {}", one_line(reason)))
            .chain(pairs)
            .collect()
    } else {
        pairs.collect()
    };
    [
        one_line(name),
        one_line(&dev.kind),
        dev.pin.to_string(),
        one_line(&dev.role),
        if faulted {
            "FAULTED".to_string()
        } else {
            one_line(&dev.state)
        },
        detail.join(" "),
    ]
}

/// A detail value as a person reads it: bare words and numbers, quotes only where a bare form
/// would be ambiguous, JSON for anything nested.
fn detail_value(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '"' || c == '=') =>
        {
            one_line(s)
        }
        other => one_line(&other.to_string()),
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(out: &mut String, rows: &[[String; 6]]) {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Device names, states and fault reasons come from config and plugins: escape control
/// characters so one cannot break the table or drive the terminal.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `3d 04h 05m`, `2h 03m 04s`, `5m 06s`, `42s`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// sitectl's own version line.
pub fn client_version() -> String {
    format!(
        "sitectl {} (protocol {PROTOCOL_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The daemon's version line, and a warning if the two speak different protocols.
pub fn daemon_version(info: &VersionInfo) -> String {
    let abi: Vec<String> = info.plugin_abi.iter().map(u32::to_string).collect();
    let abi = if abi.is_empty() {
        "none".to_string()
    } else {
        abi.join(", ")
    };
    let mut out = format!(
        "sited {} (protocol {}, plugin ABI {abi})\n",
        one_line(&info.version),
        info.protocol
    );
    if info.protocol != PROTOCOL_VERSION {
        let _ = writeln!(
            out,
            "warning: sited speaks control protocol {}, this sitectl {PROTOCOL_VERSION}; \
             use the sitectl that came with sited",
            info.protocol
        );
    }
    out
}

/// `key list`: NAME ROLE CONNECTIONS, one key per line, by name.
pub fn keys(list: &site_proto::KeyList) -> String {
    if list.keys.is_empty() {
        return "no keys (add one with `sitectl key add NAME --role ROLE`)\n".to_string();
    }
    let width = list
        .keys
        .iter()
        .map(|k| k.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("{:width$}  {:8}  CONNECTIONS\n", "NAME", "ROLE");
    for k in &list.keys {
        out.push_str(&format!(
            "{:width$}  {:8}  {}\n",
            one_line(&k.name),
            one_line(&k.role),
            k.connections
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "daemon": {
                "version": "0.1.0",
                "pid": 4242,
                "backend": "sim",
                "config": "/etc/sited/sited.toml",
                "uptime_secs": 3723
            },
            "devices": {
                "office_fan": {
                    "kind": "relay", "pin": 22, "role": "output", "state": "faulted",
                    "fault": "plugin panicked: index out of bounds"
                },
                "entry_door": {
                    "kind": "servo", "pin": 18, "role": "output", "state": "open",
                    "detail": {"pulsing": false, "angle": 90}
                },
                "entry_button": {
                    "kind": "button", "pin": 17, "role": "input", "state": "pressed"
                }
            }
        })
    }

    #[test]
    fn status_renders_header_and_table_sorted_by_name() {
        let text = status(&sample()).expect("renders");
        let expected = "\
sited 0.1.0 (pid 4242)
backend: sim (simulated pins)
config:  /etc/sited/sited.toml
uptime:  1h 02m 03s

NAME          KIND    PIN  ROLE    STATE    DETAIL
entry_button  button  17   input   pressed
entry_door    servo   18   output  open     angle=90 pulsing=false
office_fan    relay   22   output  FAULTED  fault: plugin panicked: index out of bounds
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_board_line_gives_the_model_or_not_a_pi_with_what_was_read() {
        let mut v = sample();
        v["daemon"]["board"] = json!({"model": "Raspberry Pi 3 Model B", "read": [
            {"file": "/sys/firmware/devicetree/base/model", "said": "\"Raspberry Pi 3 Model B\""},
            {"file": "/proc/version", "said": "Linux 6.1.0-57-arm64"}]});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("board: Raspberry Pi 3 Model B (read /sys/firmware/devicetree/base/model: \"Raspberry Pi 3 Model B\"; /proc/version: Linux 6.1.0-57-arm64)\n"),
            "{text}"
        );
        v["daemon"]["board"] = json!({"model": null, "read": [
            {"file": "/proc/cpuinfo", "said": "no Model or Revision line"}]});
        let text = status(&v).expect("renders");
        assert!(
            text.contains(
                "board: not a Raspberry Pi (read /proc/cpuinfo: no Model or Revision line)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_real_backend_is_named_without_the_sim_warning() {
        let mut v = sample();
        v["daemon"]["backend"] = json!("cdev");
        let text = status(&v).expect("renders");
        assert!(text.contains("backend: cdev\n"), "{text}");
        assert!(!text.contains("simulated"), "{text}");
    }

    #[test]
    fn fault_without_state_word_still_shows_faulted() {
        let mut v = sample();
        v["devices"]["entry_button"]["fault"] = json!("read failed");
        let text = status(&v).expect("renders");
        let row = text
            .lines()
            .find(|l| l.starts_with("entry_button"))
            .expect("row");
        assert!(row.contains("FAULTED"), "{row}");
        assert!(row.ends_with("fault: read failed"), "{row}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_sections_named() {
        let mut v = sample();
        v["rules"] = json!({});
        // Sections this sitectl shows are not named as missing.
        v["staff"] = json!(0);
        v["hub"] = json!({"listen": "127.0.0.1:5050", "clients": []});
        v["daemon"]["hostname"] = json!("pi-entry");
        v["devices"]["entry_door"]["since"] = json!(12);
        let text = status(&v).expect("renders");
        assert!(
            text.ends_with("\nnot shown by this sitectl: rules (see sitectl status --json)\n"),
            "{text}"
        );
        assert!(!text.contains("pi-entry"), "{text}");
        assert!(text.contains("angle=90 pulsing=false\n"), "{text}");
    }

    #[test]
    fn site_block_shows_staff_modules_links_and_hub_clients() {
        let mut v = sample();
        v["staff"] = json!(3);
        v["site"] = json!({
            "office": {"occupied": true, "locked": false, "door": "closed", "light": "on", "fan": "on"},
            "emergency": {"door": "closed", "siren": "off",
                          "link": {"hub": "127.0.0.1:5050", "name": "host-emergency", "connected": true, "outbox": 0}},
            "access": {"state": "entry", "open": ["entry_door"],
                       "link": {"hub": "127.0.0.1:5050", "name": "pi-access", "connected": false, "outbox": 2}},
        });
        v["hub"] = json!({"listen": "127.0.0.1:5050", "clients": [
            {"name": "pi-access", "type": "access-control", "address": "127.0.0.1:40000", "connected_secs": 75},
            {"name": "host-emergency", "type": "emergency", "address": "127.0.0.1:40002", "connected_secs": 12}
        ]});
        let text = status(&v).expect("renders");
        let expected = "\
uptime:  1h 02m 03s

staff on premises: 3
access:    entry (entry_door open)
  -> hub 127.0.0.1:5050 as pi-access: DISCONNECTED, outbox 2
emergency: door closed, siren off
  -> hub 127.0.0.1:5050 as host-emergency: connected, outbox 0
office:    occupied, unlocked, light on, fan on
hub: listening on 127.0.0.1:5050, 2 clients
  pi-access (access-control) from 127.0.0.1:40000, connected for 1m 15s
  host-emergency (emergency) from 127.0.0.1:40002, connected for 12s

NAME ";
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains("not shown"), "{text}");
    }

    #[test]
    fn the_hub_line_shows_its_udp_port() {
        let mut v = sample();
        v["hub"] = json!({"listen": "127.0.0.1:5050", "clients": [],
            "udp": {"listen": "127.0.0.1:6060", "streams": [], "malformed": {}}});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("hub: listening on 127.0.0.1:5050, udp 127.0.0.1:6060, 0 clients\n"),
            "{text}"
        );
    }

    #[test]
    fn a_rule_restored_active_without_a_reading_says_so() {
        let rule = json!({"name": "office-hot", "sensor": "Sensor01", "quantity": "temperature",
            "above": 25.0, "hysteresis": 0.5, "device": "office_fan", "state": "active", "last": null});
        let rule: RuleStatus = serde_json::from_value(rule).expect("a rule");
        assert_eq!(
            rule_line(&rule),
            "rule office-hot: ACTIVE (restored at start; no reading since), Sensor01 temperature (on above 25, off below 24.5) -> office_fan"
        );
        let mut idle = rule.clone();
        idle.state = "idle".into();
        assert!(rule_line(&idle).contains("idle, Sensor01 temperature no reading yet"));
    }

    #[test]
    fn a_stalled_writer_and_a_refused_report_are_shown() {
        let mut v = sample();
        v["staff"] = json!(2);
        v["store"] = json!({"stalled": [{"file": "/var/log/sited/events.log",
            "since": "2026-11-30 10:07:35", "error": "No space left on device (os error 28)"},
            {"file": "/var/log/sited/devices.log", "since": "2026-11-30 10:07:36",
             "error": "Permission denied (os error 13)", "best_effort": true}]});
        v["site"] = json!({"access": {"state": "idle", "open": [],
            "link": {"hub": "10.0.0.2:5050", "name": "front-access", "connected": true,
                     "outbox": 4, "refused": "sequence (expected 7 or lower, got 9)"}}});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("store: cannot write events.log since 2026-11-30 10:07:35: No space left on device (/var/log/sited/events.log; acknowledgements wait)\n"),
            "{text}"
        );
        assert!(
            text.contains("store: cannot write devices.log since 2026-11-30 10:07:36: Permission denied (/var/log/sited/devices.log; lines wait, nothing else does)\n"),
            "{text}"
        );
        assert!(
            text.contains("outbox 4, REFUSED: sequence (expected 7 or lower, got 9)\n"),
            "{text}"
        );
        assert!(!text.contains("not shown"), "{text}");
    }

    #[test]
    fn a_hub_with_many_clients_lists_the_first_ten_and_counts_the_rest() {
        let mut v = sample();
        let clients: Vec<Value> = (0..25)
            .map(|k| json!({"name": format!("dev{k}"), "type": "temperature", "address": "127.0.0.1:4000", "connected_secs": 1}))
            .collect();
        v["hub"] = json!({"listen": "127.0.0.1:5050", "clients": clients});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("hub: listening on 127.0.0.1:5050, 25 clients\n"),
            "{text}"
        );
        assert!(text.contains("  dev9 (temperature)"), "{text}");
        assert!(!text.contains("  dev10 "), "{text}");
        assert!(
            text.contains("  ... and 15 more (sitectl devices lists them all)\n"),
            "{text}"
        );
    }

    #[test]
    fn rules_show_one_line_each_after_the_modules() {
        let mut v = sample();
        v["site"] = json!({
            "rules": [
                {"name": "hot", "sensor": "Sensor01", "quantity": "temperature", "above": 25.0,
                 "hysteresis": 0.5, "device": "office_fan", "state": "active", "last": 26.1},
                {"name": "damp", "sensor": "s2", "quantity": "humidity", "above": 70.0,
                 "hysteresis": 5.0, "device": "dehumidifier", "state": "idle", "last": null}
            ],
            "office": {"occupied": false, "locked": false, "light": "off", "fan": "on"},
        });
        let text = status(&v).expect("renders");
        assert!(
            text.contains("\noffice:    empty, unlocked, light off, fan on\nrule hot: ACTIVE, Sensor01 temperature 26.1 (on above 25, off below 24.5) -> office_fan\nrule damp: idle, s2 humidity no reading yet (on above 70, off below 65) -> dehumidifier\n"),
            "{text}"
        );
    }

    #[test]
    fn idle_access_empty_office_and_a_lone_client_read_naturally() {
        let mut v = sample();
        v["site"] = json!({
            "access": {"state": "idle", "open": []},
            "office": {"occupied": false, "locked": false, "light": "off", "fan": "off"},
        });
        v["hub"] = json!({"listen": "0.0.0.0:5050", "clients": [
            {"name": "Sensor01", "type": "temperature", "address": "10.0.0.7:5000", "connected_secs": 5}
        ]});
        let text = status(&v).expect("renders");
        assert!(text.contains("\naccess:    idle\n"), "{text}");
        assert!(
            text.contains("\noffice:    empty, unlocked, light off, fan off\n"),
            "{text}"
        );
        assert!(
            text.contains("\nhub: listening on 0.0.0.0:5050, 1 client\n"),
            "{text}"
        );
        assert!(!text.contains("staff on premises"), "{text}");
    }

    #[test]
    fn a_client_that_proved_a_key_over_tls_says_so() {
        let mut v = sample();
        v["hub"] = json!({"listen": "127.0.0.1:5050", "tls": "0.0.0.0:5443", "clients": [
            {"name": "front-access", "type": "access-control", "address": "10.0.0.8:40000",
             "connected_secs": 5, "key": "front", "tls": true},
            {"name": "Thermo", "type": "temperature", "address": "127.0.0.1:40001",
             "connected_secs": 5}
        ]});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("hub: listening on 127.0.0.1:5050, tls 0.0.0.0:5443, 2 clients\n  front-access (access-control) from 10.0.0.8:40000, key front, tls, connected for 5s\n  Thermo (temperature) from 127.0.0.1:40001, connected for 5s\n"),
            "{text}"
        );
    }

    #[test]
    fn a_module_unknown_to_this_sitectl_is_shown_as_json_after_the_known_ones() {
        let mut v = sample();
        v["site"] = json!({
            "aquarium": {"pump": "on"},
            "access": {"state": "exit", "open": ["exit_door"]},
        });
        let text = status(&v).expect("renders");
        assert!(
            text.contains("access:    exit (exit_door open)\naquarium:  {\"pump\":\"on\"}\n"),
            "{text}"
        );
    }

    #[test]
    fn a_hub_with_no_clients_says_so() {
        let mut v = sample();
        v["hub"] = json!({"listen": "127.0.0.1:5050", "clients": []});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("\nhub: listening on 127.0.0.1:5050, 0 clients\n\nNAME"),
            "{text}"
        );
    }

    #[test]
    fn latest_sensor_readings_are_listed() {
        let mut v = sample();
        v["sensors"] =
            json!({"Sensor01": {"temperature": {"value": 27.2, "at": "2026-11-22 10:00:01"}}});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("sensor Sensor01: temperature=27.2 (at 2026-11-22 10:00:01)\n"),
            "{text}"
        );
    }

    #[test]
    fn devices_lists_tcp_and_udp_senders() {
        let v = json!({"devices": [
            {"name": "Sensor01", "type": "temperature", "via": "tcp", "address": "127.0.0.1:5000",
             "state": "connected", "connected_secs": 61, "last_seen": "2026-11-22 10:00:00"},
            {"name": "Sensor01", "via": "udp", "address": "127.0.0.1:6000", "state": "idle",
             "last_seen": "2026-11-22 10:00:05",
             "stats": {"packets": 11, "duplicates": 1, "cycles": 1, "complete_cycles": 1, "missing": 0}},
        ]});
        let text = devices(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(
            lines[1].contains("tcp") && lines[1].ends_with("connected for 1m 01s"),
            "{text}"
        );
        assert!(
            lines[2].contains("udp")
                && lines[2]
                    .ends_with("idle, packets=11 duplicates=1 cycles=1 complete=1 missing=0"),
            "{text}"
        );
        assert_eq!(
            devices(&json!({"devices": []})),
            "no devices have reported to this hub\n"
        );
    }

    #[test]
    fn released_access_says_why_the_doors_are_open() {
        let mut v = sample();
        v["site"] = json!({"access": {"state": "released", "open": ["entry_door", "exit_door"]}});
        let text = status(&v).expect("renders");
        assert!(
            text.contains("access:    released (emergency: both doors open)\n"),
            "{text}"
        );
    }

    #[test]
    fn status_missing_required_part_is_an_error() {
        let v = json!({"devices": {}});
        let err = status(&v).expect_err("no daemon section");
        assert!(err.contains("daemon"), "{err}");
    }

    #[test]
    fn no_devices_says_so() {
        let mut v = sample();
        v["devices"] = json!({});
        let text = status(&v).expect("renders");
        assert!(text.ends_with("\nno devices configured\n"), "{text}");
        assert!(!text.contains("NAME"), "{text}");
    }

    #[test]
    fn detail_values_are_quoted_only_when_needed() {
        assert_eq!(detail_value(&json!("blink")), "blink");
        assert_eq!(detail_value(&json!("slow blink")), "\"slow blink\"");
        assert_eq!(detail_value(&json!("")), "\"\"");
        assert_eq!(detail_value(&json!(1.5)), "1.5");
        assert_eq!(detail_value(&json!(null)), "null");
        assert_eq!(detail_value(&json!({"a": [1, 2]})), "{\"a\":[1,2]}");
    }

    #[test]
    fn control_characters_cannot_break_a_row() {
        let mut v = sample();
        v["devices"]["office_fan"]["fault"] = json!("line one\nline two\x1b[31m");
        let text = status(&v).expect("renders");
        let row = text
            .lines()
            .find(|l| l.starts_with("office_fan"))
            .expect("row");
        assert!(
            row.ends_with("fault: line one\\nline two\\u{1b}[31m"),
            "{row}"
        );
    }

    #[test]
    fn uptime_picks_the_two_or_three_largest_units() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(306), "5m 06s");
        assert_eq!(uptime(7384), "2h 03m 04s");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 5 * 60 + 6), "3d 04h 05m");
    }

    #[test]
    fn daemon_version_lists_abis_and_warns_on_protocol_mismatch() {
        let same = VersionInfo {
            version: "0.1.0".into(),
            plugin_abi: vec![1, 2],
            protocol: PROTOCOL_VERSION,
        };
        assert_eq!(
            daemon_version(&same),
            format!("sited 0.1.0 (protocol {PROTOCOL_VERSION}, plugin ABI 1, 2)\n")
        );
        let newer = VersionInfo {
            protocol: PROTOCOL_VERSION + 1,
            ..same
        };
        assert!(daemon_version(&newer).contains("warning: sited speaks control protocol"));
    }
}
