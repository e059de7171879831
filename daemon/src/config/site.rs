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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HubSection {
    /// The plain TCP listener (`address:port`). On a loopback address, clients without a key
    /// may do what `anonymous-role` says (default `actuator`); on any other address
    /// `anonymous-role` must be set.
    #[serde(default = "hub_tcp")]
    pub tcp: String,
    /// Gone (issue 12): replaced by `anonymous-role`. Kept only to say so.
    #[serde(default)]
    pub allow_remote: Option<toml::Value>,
    /// What clients without a key may do on the plain TCP port and with unsigned datagrams.
    #[serde(default)]
    pub anonymous_role: Option<AnonymousRole>,
    /// The keys file: one `[[key]]` per client (default `<state-dir>/keys.toml`).
    #[serde(default)]
    pub keys: Option<PathBuf>,
    /// A TLS 1.3 listener (`address:port`) speaking the same line protocol; clients without
    /// a key may do nothing there.
    #[serde(default)]
    pub tls: Option<String>,
    /// The TLS certificate chain and key (PEM); default: a self-signed pair made at the first
    /// start in `<state-dir>/tls/`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// A signed datagram whose time is further than this from the hub's clock is dropped.
    #[serde(default = "datagram_window_secs")]
    pub datagram_window_secs: f64,
    /// A client that has sent a `PING` is dropped once silent for 3 times this long.
    #[serde(default = "heartbeat_secs")]
    pub heartbeat_secs: f64,
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

/// `[hub] anonymous-role`: what a client without a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousRole {
    None,
    Sensor,
    Actuator,
    Node,
}

impl AnonymousRole {
    pub fn role(self) -> Option<crate::keys::Role> {
        use crate::keys::Role;
        match self {
            AnonymousRole::None => None,
            AnonymousRole::Sensor => Some(Role::Sensor),
            AnonymousRole::Actuator => Some(Role::Actuator),
            AnonymousRole::Node => Some(Role::Node),
        }
    }
}

impl LinkSection {
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.heartbeat_secs)
    }
}

impl HubSection {
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.heartbeat_secs)
    }

    /// What clients without a key may do on the plain port (the config check has made sure
    /// a non-loopback listener says so itself).
    pub fn anonymous(&self) -> Option<crate::keys::Role> {
        self.anonymous_role
            .unwrap_or(AnonymousRole::Actuator)
            .role()
    }
}

fn datagram_window_secs() -> f64 {
    30.0
}

fn heartbeat_secs() -> f64 {
    5.0
}

/// A `heartbeat-secs` in range, as a duration.
fn check_heartbeat(secs: f64) -> Result<std::time::Duration, String> {
    if secs.is_finite() && (0.05..=3600.0).contains(&secs) {
        Ok(std::time::Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not within 0.05..=3600 seconds"))
    }
}

/// `[link]`: how this node's modules reach their hub, and the key they prove themselves with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LinkSection {
    /// `tls://host:port`, or `host:port` for plain TCP to a hub on this machine.
    #[serde(default)]
    pub hub: Option<String>,
    /// The hub certificate's SHA-256 (64 hex characters, colons optional); required for
    /// `tls://`, and a hub presenting another certificate is refused.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The key's name at the hub; the modules register as `<name>-access`, `<name>-emergency`.
    #[serde(default)]
    pub name: Option<String>,
    /// A file holding the key's 64-hex secret, readable by sited's user only.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The link pings its hub this often, and drops the connection after 3 silent intervals.
    #[serde(default = "heartbeat_secs")]
    pub heartbeat_secs: f64,
}

/// Where a link connects: plain TCP, or TLS with the certificate pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubTarget {
    Plain(SocketAddr),
    Tls {
        addr: SocketAddr,
        /// The host as written (the TLS server name).
        host: String,
        /// The pinned certificate's SHA-256.
        fingerprint: [u8; 32],
    },
}

impl HubTarget {
    pub fn addr(&self) -> SocketAddr {
        match self {
            HubTarget::Plain(addr) | HubTarget::Tls { addr, .. } => *addr,
        }
    }
}

impl std::fmt::Display for HubTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubTarget::Plain(addr) => write!(f, "{addr}"),
            HubTarget::Tls { addr, .. } => write!(f, "tls://{addr}"),
        }
    }
}

/// A fingerprint as `sitectl cert` prints it: 64 hex characters, colons optional, either case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    crate::keys::from_hex(&hex)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            format!("\"{text}\" is not a SHA-256 fingerprint (64 hex characters, as `sitectl cert` prints it)")
        })
}

/// A module's hub address: `tls://host:port` (with `[link] fingerprint`) or `host:port`.
pub fn parse_target(text: &str, fingerprint: Option<&str>) -> Result<HubTarget, String> {
    match text.strip_prefix("tls://") {
        Some(rest) => {
            let fingerprint = fingerprint.ok_or(
                "a tls:// hub needs [link] fingerprint = \"<64 hex>\" (run `sitectl cert` on the hub)",
            )?;
            let fingerprint = parse_fingerprint(fingerprint)?;
            let addr = resolve_addr(rest)?;
            let host = rest
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(rest)
                .to_string();
            Ok(HubTarget::Tls {
                addr,
                host,
                fingerprint,
            })
        }
        None if text.contains("://") => {
            Err(format!("\"{text}\": a hub is tls://host:port or host:port"))
        }
        None => resolve_addr(text).map(HubTarget::Plain),
    }
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
        self.check_link()?;
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
            self.check_hub_access(h)?;
        }
        self.check_rules(&outputs)
    }

    /// Who may use the hub: `allow-remote` is gone, a non-loopback plain listener says what
    /// clients without a key may do, and the TLS listener has its certificate.
    fn check_hub_access(&self, h: &HubSection) -> Result<(), Error> {
        let err = |key: &str, message: String| self.section_error("hub", key, message);
        if h.allow_remote.is_some() {
            return Err(err(
                "allow-remote",
                "allow-remote is gone: set anonymous-role = \"none\", \"sensor\", \"actuator\" or \"node\" to say what clients without a key may do (see SECURITY in the README)".into(),
            ));
        }
        let tcp = resolve_addr(&h.tcp).map_err(|m| err("tcp", m))?;
        let udp = match &h.udp {
            Some(udp) => Some(resolve_addr(udp).map_err(|m| err("udp", m))?),
            None => None,
        };
        for (key, addr) in [("tcp", Some(tcp)), ("udp", udp)] {
            if let Some(addr) = addr
                && !addr.ip().is_loopback()
                && h.anonymous_role.is_none()
            {
                return Err(err(
                    key,
                    format!(
                        "{addr} is not a loopback address: set anonymous-role = \"none\", \"sensor\", \"actuator\" or \"node\" to say what clients without a key may do there"
                    ),
                ));
            }
        }
        if let Some(tls) = &h.tls {
            let addr = resolve_addr(tls).map_err(|m| err("tls", m))?;
            if addr == tcp && addr.port() != 0 {
                return Err(err("tls", format!("{addr} is also the plain tcp listener")));
            }
        }
        match (&h.tls_cert, &h.tls_key) {
            (Some(_), None) => {
                return Err(err("tls-key", "tls-cert is set: set tls-key too".into()));
            }
            (None, Some(_)) => {
                return Err(err("tls-cert", "tls-key is set: set tls-cert too".into()));
            }
            _ => {}
        }
        check_heartbeat(h.heartbeat_secs).map_err(|m| err("heartbeat-secs", m))?;
        if !(h.datagram_window_secs.is_finite() && (1.0..=3600.0).contains(&h.datagram_window_secs))
        {
            return Err(err(
                "datagram-window-secs",
                format!("{} is not within 1..=3600 seconds", h.datagram_window_secs),
            ));
        }
        Ok(())
    }

    /// `[link]` and the modules' hubs: each module has a hub (its own `hub`, `[link] hub`, or
    /// this node's `[hub]`); a plain one is on this machine; a `tls://` one has a
    /// fingerprint; a key has both a name and a secret file.
    fn check_link(&self) -> Result<(), Error> {
        let link = self.link.as_ref();
        if let Some(l) = link {
            let err = |key: &str, message: String| self.section_error("link", key, message);
            match (&l.name, &l.secret_file) {
                (Some(_), None) => {
                    return Err(err(
                        "secret-file",
                        "name is set: set secret-file, the file holding the key's secret, too"
                            .into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(err(
                        "name",
                        "secret-file is set: set name, the key's name at the hub, too".into(),
                    ));
                }
                _ => {}
            }
            if let Some(name) = &l.name
                && !crate::keys::valid_key_name(name)
            {
                return Err(err(
                    "name",
                    format!(
                        "\"{name}\" is not a key name (a letter, then letters, digits, `_` or `-`, at most 48 characters)"
                    ),
                ));
            }
            if let Some(fp) = &l.fingerprint {
                parse_fingerprint(fp).map_err(|m| err("fingerprint", m))?;
            }
            check_heartbeat(l.heartbeat_secs).map_err(|m| err("heartbeat-secs", m))?;
            if let Some(hub) = &l.hub {
                self.check_target("link", hub)?;
            }
        }
        for (section, hub) in [
            ("access", self.access.as_ref().map(|a| &a.hub)),
            ("emergency", self.emergency.as_ref().map(|e| &e.hub)),
        ] {
            match hub {
                Some(Some(addr)) => self.check_target(section, addr)?,
                Some(None) if self.hub.is_none() && link.and_then(|l| l.hub.as_ref()).is_none() => {
                    return Err(self.section_error(
                        section,
                        "hub",
                        "no hub to report to: set [link] hub = \"tls://host:port\" (or hub here), or add a [hub] section".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_target(&self, section: &str, text: &str) -> Result<(), Error> {
        let fingerprint = self.link.as_ref().and_then(|l| l.fingerprint.as_deref());
        let target =
            parse_target(text, fingerprint).map_err(|m| self.section_error(section, "hub", m))?;
        let keyed = self.link.as_ref().is_some_and(|l| l.name.is_some());
        if matches!(target, HubTarget::Tls { .. }) && !keyed {
            return Err(self.section_error(
                section,
                "hub",
                "a tls:// hub takes nothing from a node without a key: set [link] name and secret-file (sitectl key add <name> --role node on the hub)".into(),
            ));
        }
        if let HubTarget::Plain(addr) = target
            && !addr.ip().is_loopback()
        {
            return Err(self.section_error(
                section,
                "hub",
                format!("{addr} is plain TCP to another machine, where anyone on the path could take the link over: use hub = \"tls://{addr}\" with [link] fingerprint"),
            ));
        }
        Ok(())
    }

    /// The hub a module reports to, as written: its own `hub`, else `[link] hub`; `None`:
    /// this node's `[hub]`.
    pub fn module_hub<'a>(&'a self, own: &'a Option<String>) -> Option<&'a str> {
        own.as_deref()
            .or(self.link.as_ref().and_then(|l| l.hub.as_deref()))
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
    fn a_remote_hub_listener_needs_anonymous_role_and_allow_remote_is_gone() {
        let err = check("[hub]\ntcp = \"0.0.0.0:5050\"\n").expect_err("remote");
        assert_eq!(err.key.as_deref(), Some("hub.tcp"), "{err}");
        assert!(err.message.contains("set anonymous-role"), "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
        let cfg =
            check("[hub]\ntcp = \"0.0.0.0:5050\"\nanonymous-role = \"sensor\"\n").expect("valid");
        assert_eq!(
            cfg.hub.as_ref().expect("hub").anonymous(),
            Some(crate::keys::Role::Sensor)
        );
        let err = check("[hub]\nudp = \"0.0.0.0:6060\"\n").expect_err("remote udp");
        assert_eq!(err.key.as_deref(), Some("hub.udp"), "{err}");
        let err = check("[hub]\ntcp = \"0.0.0.0:5050\"\nallow-remote = true\n").expect_err("gone");
        assert_eq!(err.key.as_deref(), Some("hub.allow-remote"), "{err}");
        assert!(err.message.contains("anonymous-role"), "{err}");
        // "node" is taken, but applies only to clients on this machine (see hub::server).
        assert!(check("[hub]\ntcp = \"0.0.0.0:5050\"\nanonymous-role = \"node\"\n").is_ok());
        let err = check("[hub]\nanonymous-role = \"admin\"\n").expect_err("unknown");
        assert!(err.message.contains("unknown variant"), "{err}");
        // On loopback, clients without a key are actuators unless the config says otherwise.
        let cfg = check("[hub]\n").expect("valid");
        assert_eq!(
            cfg.hub.as_ref().expect("hub").anonymous(),
            Some(crate::keys::Role::Actuator)
        );
        let cfg = check("[hub]\nanonymous-role = \"none\"\n").expect("valid");
        assert_eq!(cfg.hub.as_ref().expect("hub").anonymous(), None);
    }

    #[test]
    fn tls_settings_are_checked() {
        let err = check("[hub]\ntls-cert = \"c.pem\"\n").expect_err("half");
        assert_eq!(err.key.as_deref(), Some("hub.tls-key"), "{err}");
        let err = check("[hub]\ntls = \"127.0.0.1:5050\"\n").expect_err("same port");
        assert!(check("[hub]\ntcp = \"127.0.0.1:0\"\ntls = \"127.0.0.1:0\"\n").is_ok());
        assert!(err.message.contains("also the plain tcp"), "{err}");
        let cfg =
            check("[hub]\ntls = \"0.0.0.0:5443\"\ntls-cert = \"c.pem\"\ntls-key = \"k.pem\"\n")
                .expect("tls on the LAN needs no anonymous-role");
        let hub = cfg.hub.expect("hub");
        assert_eq!(hub.tls_key.as_deref(), Some(Path::new("/etc/sited/k.pem")));
        let err = check("[hub]\ndatagram-window-secs = 0.0\n").expect_err("window");
        assert_eq!(
            err.key.as_deref(),
            Some("hub.datagram-window-secs"),
            "{err}"
        );
    }

    const FP: &str = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff";

    #[test]
    fn a_door_node_links_over_tls_with_a_pinned_fingerprint_and_a_key() {
        let cfg = check(&format!(
            "[link]\nhub = \"tls://127.0.0.1:5443\"\nfingerprint = \"{FP}\"\nname = \"front\"\nsecret-file = \"link.secret\"\n[access]\n[emergency]\n"
        ))
        .expect("valid");
        let link = cfg.link.as_ref().expect("link");
        assert_eq!(
            link.secret_file.as_deref(),
            Some(Path::new("/etc/sited/link.secret"))
        );
        let access = cfg.access.as_ref().expect("access");
        assert_eq!(cfg.module_hub(&access.hub), Some("tls://127.0.0.1:5443"));
        let target = super::parse_target("tls://127.0.0.1:5443", Some(FP)).expect("target");
        let super::HubTarget::Tls {
            fingerprint, host, ..
        } = target
        else {
            panic!("not tls: {target:?}");
        };
        assert_eq!((fingerprint[1], host.as_str()), (0x11, "127.0.0.1"));
        let err = check("[link]\nhub = \"tls://127.0.0.1:5443\"\n[access]\n")
            .expect_err("no fingerprint");
        assert_eq!(err.key.as_deref(), Some("link.hub"), "{err}");
        assert!(err.message.contains("fingerprint"), "{err}");
        let err = check(&format!(
            "[link]\nhub = \"tls://127.0.0.1:5443\"\nfingerprint = \"{}\"\n",
            &FP[3..]
        ))
        .expect_err("short");
        assert_eq!(err.key.as_deref(), Some("link.fingerprint"), "{err}");
        let err = check(&format!(
            "[link]\nhub = \"tls://127.0.0.1:5443\"\nfingerprint = \"{FP}\"\n[access]\n"
        ))
        .expect_err("no key");
        assert!(
            err.message.contains("set [link] name and secret-file"),
            "{err}"
        );
        let err = check("[link]\nname = \"front\"\n").expect_err("no secret");
        assert_eq!(err.key.as_deref(), Some("link.secret-file"), "{err}");
        // Plain TCP only to a hub on this machine.
        let err = check("[link]\nhub = \"192.0.2.1:5050\"\n[access]\n").expect_err("plain remote");
        assert!(err.message.contains("tls://192.0.2.1:5050"), "{err}");
        let err = check("[access]\nhub = \"192.0.2.1:5050\"\n").expect_err("plain remote");
        assert_eq!(err.key.as_deref(), Some("access.hub"), "{err}");
        assert!(check("[link]\nhub = \"127.0.0.1:5050\"\n[access]\n").is_ok());
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
