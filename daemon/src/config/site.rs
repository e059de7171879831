//! The optional site sections: `[access]`, `[emergency]`, `[office]`, `[hub]` and `[[rule]]`. A
//! node runs only the modules it has a section for. Checks: every named device exists and is of
//! a kind that can do the job, no output is driven by two modules, a module has a hub to report
//! to, and the hub listens beyond loopback only when `allow-remote` says so (its plain protocol
//! has no authentication: anyone who can reach it could report entries). A rule's device may be
//! shared only with other rules and the office's light and fan, which are on/off wishes that
//! the site combines (on if anyone wants it on, see `site::Site`).

use super::{Config, Error};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

fn s(v: &str) -> String {
    v.to_string()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccessSection {
    #[serde(default = "entry_button")]
    pub entry_button: String,
    #[serde(default = "exit_button")]
    pub exit_button: String,
    #[serde(default = "entry_door")]
    pub entry_door: String,
    #[serde(default = "exit_door")]
    pub exit_door: String,
    #[serde(default = "entry_led")]
    pub entry_led: String,
    #[serde(default = "exit_led")]
    pub exit_led: String,
    /// How long each door stays open.
    #[serde(default = "open_secs")]
    pub open_secs: f64,
    /// Where to report (`host:port`); default: this daemon's own hub.
    #[serde(default)]
    pub hub: Option<String>,
    /// The name this module registers with at its hub; unique per site. Default: `<host>-access`.
    #[serde(default)]
    pub name: Option<String>,
}

fn entry_button() -> String {
    s("entry_button")
}
fn exit_button() -> String {
    s("exit_button")
}
fn entry_door() -> String {
    s("entry_door")
}
fn exit_door() -> String {
    s("exit_door")
}
fn entry_led() -> String {
    s("entry_led")
}
fn exit_led() -> String {
    s("exit_led")
}
fn open_secs() -> f64 {
    5.0
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EmergencySection {
    #[serde(default = "emergency_door")]
    pub door: String,
    #[serde(default = "siren")]
    pub siren: String,
    #[serde(default)]
    pub hub: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

fn emergency_door() -> String {
    s("emergency_door")
}
fn siren() -> String {
    s("siren")
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OfficeSection {
    #[serde(default = "office_door")]
    pub door: String,
    #[serde(default = "lock_switch")]
    pub lock_switch: String,
    #[serde(default = "office_lock")]
    pub lock: String,
    #[serde(default = "office_light")]
    pub light: String,
    #[serde(default = "office_fan")]
    pub fan: String,
}

fn office_door() -> String {
    s("office_door")
}
fn lock_switch() -> String {
    s("lock_switch")
}
fn office_lock() -> String {
    s("office_lock")
}
fn office_light() -> String {
    s("office_light")
}
fn office_fan() -> String {
    s("office_fan")
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HubSection {
    /// The TCP listener (`address:port`); loopback unless `allow-remote = true`.
    #[serde(default = "hub_tcp")]
    pub tcp: String,
    /// Listen on a non-loopback address. The plain protocol is unauthenticated.
    #[serde(default)]
    pub allow_remote: bool,
    /// The seed-000 event log.
    #[serde(default = "event_log")]
    pub event_log: PathBuf,
    /// Seed 001's server record, in the seed server's words: registrations, commands, answers,
    /// closes and disconnections, one timestamped line each. Off unless set.
    #[serde(default)]
    pub device_log: Option<PathBuf>,
    /// The UDP listener for sensor streams (`address:port`); none if unset.
    #[serde(default)]
    pub udp: Option<String>,
    /// A sensor's cycle closes after this long without a packet.
    #[serde(default = "cycle_gap_ms")]
    pub cycle_gap_ms: u64,
    /// TCP connections beyond this are turned away (`ERR too many clients`).
    #[serde(default = "max_clients")]
    pub max_clients: usize,
    /// TCP connections from one address beyond this are turned away (`ERR too many clients
    /// from <address>`), so one host cannot take every slot.
    #[serde(default = "max_clients_per_address")]
    pub max_clients_per_address: usize,
}

fn max_clients() -> usize {
    16384
}

fn max_clients_per_address() -> usize {
    256
}

/// One `[[rule]]` (seed 002): `device` is on while `sensor`'s `quantity` is above `above`,
/// until it falls below `above - hysteresis`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleSection {
    /// Shown in status and keys the rule's saved state; default `<sensor>-<quantity>-<device>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The device name as it reports to the hub (`Sensor01`).
    pub sensor: String,
    pub quantity: String,
    pub above: f64,
    #[serde(default = "hysteresis")]
    pub hysteresis: f64,
    /// An on/off output.
    pub device: String,
}

impl RuleSection {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{}", self.sensor, self.quantity, self.device))
    }
}

fn hysteresis() -> f64 {
    0.5
}

/// What a sensor or quantity name may be: what the seed's datagrams and JSON can carry.
fn valid_reading_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ',' && c != '"')
}

fn cycle_gap_ms() -> u64 {
    2000
}

fn hub_tcp() -> String {
    s("127.0.0.1:5050")
}
fn event_log() -> PathBuf {
    PathBuf::from("/var/log/sited/events.log")
}

/// Which device kinds can fill each role.
const BUTTONS: &[&str] = &["button"];
const DOORS: &[&str] = &["servo", "relay"];
const LAMPS: &[&str] = &["led", "relay"];
const REEDS: &[&str] = &["reed"];
const SIRENS: &[&str] = &["siren", "relay", "led"];
const SWITCHES: &[&str] = &["switch"];
const LOCKS: &[&str] = &["relay", "servo"];
const ON_OFF: &[&str] = &["relay", "led", "siren"];

/// Resolves `host:port` (names allowed; looked up once, at load).
pub fn resolve_addr(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("\"{text}\" is not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("\"{text}\" resolves to no address"))
}

impl Config {
    /// The checks the site sections need beyond their types.
    pub(super) fn check_site(&self) -> Result<(), Error> {
        let mut outputs: Vec<(String, String)> = Vec::new();
        let mut bind = |section: &str,
                        key: &str,
                        device: &str,
                        kinds: &[&str],
                        output: bool|
         -> Result<(), Error> {
            let found = self.devices.iter().find(|d| d.name == device);
            let err = |message: String| self.section_error(section, key, message);
            let Some(dev) = found else {
                return Err(err(format!(
                    "no device named \"{device}\" (add a [[device]] with that name)"
                )));
            };
            if !kinds.contains(&dev.kind.as_str()) {
                return Err(err(format!(
                    "\"{device}\" is a {}; this needs a {}",
                    dev.kind,
                    kinds.join(" or ")
                )));
            }
            if output {
                if let Some((other, _)) = outputs.iter().find(|(_, d)| *d == device) {
                    return Err(err(format!(
                        "\"{device}\" is already driven by [{other}]; an output has one master"
                    )));
                }
                outputs.push((section.to_string(), device.to_string()));
            }
            Ok(())
        };
        if let Some(a) = &self.access {
            bind("access", "entry-button", &a.entry_button, BUTTONS, false)?;
            bind("access", "exit-button", &a.exit_button, BUTTONS, false)?;
            bind("access", "entry-door", &a.entry_door, DOORS, true)?;
            bind("access", "exit-door", &a.exit_door, DOORS, true)?;
            bind("access", "entry-led", &a.entry_led, LAMPS, true)?;
            bind("access", "exit-led", &a.exit_led, LAMPS, true)?;
            if !(0.05..=600.0).contains(&a.open_secs) {
                return Err(self.section_error(
                    "access",
                    "open-secs",
                    format!("{} is not within 0.05..=600 seconds", a.open_secs),
                ));
            }
        }
        if let Some(e) = &self.emergency {
            bind("emergency", "door", &e.door, REEDS, false)?;
            bind("emergency", "siren", &e.siren, SIRENS, true)?;
        }
        if let Some(o) = &self.office {
            bind("office", "door", &o.door, REEDS, false)?;
            bind("office", "lock-switch", &o.lock_switch, SWITCHES, false)?;
            bind("office", "lock", &o.lock, LOCKS, true)?;
            bind("office", "light", &o.light, LAMPS, true)?;
            bind("office", "fan", &o.fan, LAMPS, true)?;
        }
        for (section, hub) in [
            ("access", self.access.as_ref().map(|a| &a.hub)),
            ("emergency", self.emergency.as_ref().map(|e| &e.hub)),
        ] {
            match hub {
                Some(Some(addr)) => {
                    resolve_addr(addr).map_err(|m| self.section_error(section, "hub", m))?;
                }
                Some(None) if self.hub.is_none() => {
                    return Err(self.section_error(
                        section,
                        "hub",
                        "no hub to report to: set hub = \"host:port\" here or add a [hub] section"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        if let Some(h) = &self.hub {
            if !(100..=600_000).contains(&h.cycle_gap_ms) {
                return Err(self.section_error(
                    "hub",
                    "cycle-gap-ms",
                    format!("{} is not within 100..=600000", h.cycle_gap_ms),
                ));
            }
            if let Some(path) = &h.device_log {
                let state = self.daemon.state_dir.join(crate::store::STATE_FILE);
                // The same file under another name (a symlink, a hard link) counts too.
                let same = |a: &std::path::Path, b: &std::path::Path| {
                    use std::os::unix::fs::MetadataExt;
                    a == b
                        || matches!(
                            (std::fs::metadata(a), std::fs::metadata(b)),
                            (Ok(x), Ok(y)) if (x.dev(), x.ino()) == (y.dev(), y.ino())
                        )
                };
                if same(path, &h.event_log) || same(path, &state) {
                    return Err(self.section_error(
                        "hub",
                        "device-log",
                        format!(
                            "{} is also the {}; give the device log a file of its own",
                            path.display(),
                            if same(path, &h.event_log) {
                                "event log"
                            } else {
                                "state file"
                            }
                        ),
                    ));
                }
            }
            if !(1..=1_000_000).contains(&h.max_clients) {
                return Err(self.section_error(
                    "hub",
                    "max-clients",
                    format!("{} is not within 1..=1000000", h.max_clients),
                ));
            }
            if !(1..=1_000_000).contains(&h.max_clients_per_address) {
                return Err(self.section_error(
                    "hub",
                    "max-clients-per-address",
                    format!("{} is not within 1..=1000000", h.max_clients_per_address),
                ));
            }
            if let Some(udp) = &h.udp {
                let addr = resolve_addr(udp).map_err(|m| self.section_error("hub", "udp", m))?;
                if !addr.ip().is_loopback() && !h.allow_remote {
                    return Err(self.section_error(
                        "hub",
                        "udp",
                        format!("{addr} is not a loopback address: set allow-remote = true to accept sensor data from the network"),
                    ));
                }
            }
            let addr = resolve_addr(&h.tcp).map_err(|m| self.section_error("hub", "tcp", m))?;
            if !addr.ip().is_loopback() && !h.allow_remote {
                return Err(self.section_error(
                    "hub",
                    "tcp",
                    format!("{addr} is not a loopback address: set allow-remote = true to accept reports from the network (the plain protocol has no authentication)"),
                ));
            }
        }
        self.check_rules(&outputs)
    }

    /// `[[rule]]`s act on this node's hub readings and drive an on/off output that no module
    /// owns outright (the office's light and fan may be shared).
    fn check_rules(&self, outputs: &[(String, String)]) -> Result<(), Error> {
        let mut names: Vec<String> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let err = |key: &str, message: String| self.rule_error(i, key, message);
            if self.hub.is_none() {
                return Err(err(
                    "",
                    "rules act on the readings this node's hub receives: add a [hub] section"
                        .into(),
                ));
            }
            for (key, value) in [("sensor", &rule.sensor), ("quantity", &rule.quantity)] {
                if !valid_reading_name(value) {
                    return Err(err(
                        key,
                        format!(
                            "\"{value}\" is not a {key} name (1-64 printable characters, no spaces, commas or quotes)"
                        ),
                    ));
                }
            }
            if !rule.above.is_finite() {
                return Err(err("above", format!("{} is not a number", rule.above)));
            }
            if !(rule.hysteresis.is_finite() && rule.hysteresis >= 0.0) {
                return Err(err(
                    "hysteresis",
                    format!("{} is not a number of 0 or more", rule.hysteresis),
                ));
            }
            let Some(dev) = self.devices.iter().find(|d| d.name == rule.device) else {
                return Err(err(
                    "device",
                    format!(
                        "no device named \"{}\" (add a [[device]] with that name)",
                        rule.device
                    ),
                ));
            };
            if !ON_OFF.contains(&dev.kind.as_str()) {
                return Err(err(
                    "device",
                    format!(
                        "\"{}\" is a {}; a rule switches a {}",
                        rule.device,
                        dev.kind,
                        ON_OFF.join(" or ")
                    ),
                ));
            }
            let shareable = self
                .office
                .as_ref()
                .is_some_and(|o| o.light == rule.device || o.fan == rule.device);
            if let Some((section, _)) = outputs.iter().find(|(_, d)| *d == rule.device)
                && !shareable
            {
                return Err(err(
                    "device",
                    format!(
                        "\"{}\" is driven by [{section}]; a rule may share only the office's light or fan",
                        rule.device
                    ),
                ));
            }
            let name = rule.name();
            if !crate::config::valid_name(&name) {
                return Err(err(
                    "name",
                    format!(
                        "\"{name}\" is not a valid rule name (use letters, digits, `_` and `-`, starting with a letter, at most 64 characters; set name = ...)"
                    ),
                ));
            }
            if names.contains(&name) {
                return Err(err(
                    "name",
                    format!(
                        "a rule named \"{name}\" is already defined; give each rule its own name"
                    ),
                ));
            }
            names.push(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    const DEVICES: &str = r#"
[[device]]
name = "entry_button"
kind = "button"
pin = 5
[[device]]
name = "exit_button"
kind = "button"
pin = 6
[[device]]
name = "entry_door"
kind = "servo"
pin = 12
[[device]]
name = "exit_door"
kind = "servo"
pin = 13
[[device]]
name = "entry_led"
kind = "led"
pin = 17
[[device]]
name = "exit_led"
kind = "led"
pin = 27
[[device]]
name = "emergency_door"
kind = "reed"
pin = 16
[[device]]
name = "siren"
kind = "siren"
pin = 22
[[device]]
name = "office_door"
kind = "reed"
pin = 20
[[device]]
name = "lock_switch"
kind = "switch"
pin = 21
[[device]]
name = "office_lock"
kind = "relay"
pin = 23
[[device]]
name = "office_light"
kind = "relay"
pin = 24
[[device]]
name = "office_fan"
kind = "relay"
pin = 25
"#;

    fn check(sections: &str) -> Result<crate::config::Config, crate::config::Error> {
        parse(
            Path::new("/etc/sited/sited.toml"),
            &format!("{sections}\n{DEVICES}"),
        )
    }

    #[test]
    fn sections_with_default_device_names_bind_the_seed_site() {
        let cfg = check("[hub]\n[access]\nopen-secs = 2.5\n[emergency]\n").expect("valid");
        assert_eq!(
            cfg.access.as_ref().expect("access").entry_door,
            "entry_door"
        );
        assert_eq!(cfg.access.as_ref().expect("access").open_secs, 2.5);
        assert_eq!(cfg.hub.as_ref().expect("hub").tcp, "127.0.0.1:5050");
    }

    #[test]
    fn a_module_without_a_hub_is_an_error() {
        let err = check("[access]\n").expect_err("no hub");
        assert_eq!(err.key.as_deref(), Some("access.hub"), "{err}");
        assert!(err.message.contains("no hub to report to"), "{err}");
    }

    #[test]
    fn a_module_may_report_to_another_nodes_hub() {
        let cfg = check("[access]\nhub = \"127.0.0.1:6000\"\n").expect("valid");
        assert!(cfg.hub.is_none());
    }

    #[test]
    fn unknown_device_is_named_with_its_line() {
        let err = check("[hub]\n[access]\nentry-door = \"front_door\"\n").expect_err("unknown");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.message.contains("no device named \"front_door\""),
            "{err}"
        );
    }

    #[test]
    fn wrong_kind_is_refused() {
        let err = check("[hub]\n[emergency]\ndoor = \"entry_button\"\n").expect_err("kind");
        assert!(
            err.message.contains("is a button; this needs a reed"),
            "{err}"
        );
    }

    #[test]
    fn an_output_cannot_have_two_masters() {
        let err =
            check("[hub]\n[access]\n[emergency]\nsiren = \"entry_led\"\n").expect_err("shared");
        assert!(err.message.contains("already driven by [access]"), "{err}");
    }

    #[test]
    fn remote_hub_listener_needs_allow_remote() {
        let err = check("[hub]\ntcp = \"0.0.0.0:5050\"\n").expect_err("remote");
        assert!(err.message.contains("allow-remote"), "{err}");
        assert!(check("[hub]\ntcp = \"0.0.0.0:5050\"\nallow-remote = true\n").is_ok());
    }

    #[test]
    fn open_secs_out_of_range_is_refused() {
        let err = check("[hub]\n[access]\nopen-secs = 0.0\n").expect_err("range");
        assert_eq!(err.key.as_deref(), Some("access.open-secs"));
    }

    const FAN_RULE: &str =
        "[[rule]]\nsensor = \"Sensor01\"\nquantity = \"temperature\"\nabove = 25.0\n";

    #[test]
    fn a_rule_binds_to_an_on_off_output_with_defaults() {
        let cfg = check(&format!("[hub]\n{FAN_RULE}device = \"office_fan\"\n")).expect("valid");
        assert_eq!(cfg.rules.len(), 1);
        assert_eq!(cfg.rules[0].hysteresis, 0.5);
        assert_eq!(cfg.rules[0].name(), "Sensor01-temperature-office_fan");
    }

    #[test]
    fn a_rule_naming_an_unknown_device_is_an_error_at_its_line() {
        let err =
            check(&format!("[hub]\n{FAN_RULE}device = \"attic_fan\"\n")).expect_err("unknown");
        assert_eq!(err.key.as_deref(), Some("rule[0].device"), "{err}");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(
            err.message.contains("no device named \"attic_fan\""),
            "{err}"
        );
    }

    #[test]
    fn a_rule_may_share_the_office_fan_but_not_a_door_or_the_siren() {
        assert!(
            check(&format!(
                "[hub]\n[office]\n{FAN_RULE}device = \"office_fan\"\n"
            ))
            .is_ok()
        );
        assert!(
            check(&format!(
                "[hub]\n[office]\n{FAN_RULE}device = \"office_light\"\n"
            ))
            .is_ok()
        );
        let err = check(&format!(
            "[hub]\n[office]\n{FAN_RULE}device = \"office_lock\"\n"
        ))
        .expect_err("lock");
        assert!(err.message.contains("driven by [office]"), "{err}");
        let err = check(&format!(
            "[hub]\n[emergency]\n{FAN_RULE}device = \"siren\"\n"
        ))
        .expect_err("siren");
        assert!(err.message.contains("driven by [emergency]"), "{err}");
        let err = check(&format!("[hub]\n{FAN_RULE}device = \"entry_door\"\n")).expect_err("servo");
        assert!(
            err.message
                .contains("is a servo; a rule switches a relay or led or siren"),
            "{err}"
        );
    }

    #[test]
    fn rules_need_a_hub_a_sane_hysteresis_and_unique_names() {
        let err = check(&format!("{FAN_RULE}device = \"office_fan\"\n")).expect_err("no hub");
        assert!(err.message.contains("add a [hub] section"), "{err}");
        let err = check(&format!(
            "[hub]\n{FAN_RULE}device = \"office_fan\"\nhysteresis = -1.0\n"
        ))
        .expect_err("negative");
        assert_eq!(err.key.as_deref(), Some("rule[0].hysteresis"), "{err}");
        let twice = format!(
            "[hub]\n{FAN_RULE}device = \"office_fan\"\n{FAN_RULE}device = \"office_fan\"\nhysteresis = 2.0\n"
        );
        let err = check(&twice).expect_err("same name");
        assert_eq!(err.key.as_deref(), Some("rule[1].name"), "{err}");
        let err = check("[hub]\n[[rule]]\nsensor = \"Sensor 01\"\nquantity = \"t\"\nabove = 1.0\ndevice = \"office_fan\"\n")
            .expect_err("space");
        assert!(err.message.contains("not a sensor name"), "{err}");
        let err = check("[hub]\n[[rule]]\nsensor = \"S\"\nquantity = \"t\"\nabove = 1.0\ndevice = \"office_fan\"\nspeed = 3\n")
            .expect_err("unknown key");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_site_section_is_refused() {
        let err = check("[hub]\n[office]\nfan-speed = 3\n").expect_err("unknown");
        assert!(err.message.contains("unknown field"), "{err}");
    }
}
