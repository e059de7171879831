//! The config file (`/etc/sited/sited.toml`): parsed with serde (kebab-case keys, unknown keys
//! rejected), then checked for what types cannot say (a pin used twice, a duplicate name).
//! Every error names the file, the line and the key, so a site owner can fix it in one go.
//! Device kinds check their own keys in their plugins (see `plugin_host::validate_devices`).

pub mod site;

use crate::hw::{BackendKind, Pin};
use serde::Deserialize;
pub use site::{
    AccessSection, AnonymousRole, EmergencySection, HubSection, HubTarget, LinkSection,
    OfficeSection, RuleSection,
};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/sited/sited.toml";

/// A config problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `device[2].pin`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

/// The whole config, with relative paths already resolved against the file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub daemon: DaemonSection,
    pub hardware: HardwareSection,
    pub devices: Vec<DeviceSection>,
    pub access: Option<AccessSection>,
    pub emergency: Option<EmergencySection>,
    pub office: Option<OfficeSection>,
    pub hub: Option<HubSection>,
    /// How the modules reach their hub, and with which key.
    pub link: Option<LinkSection>,
    /// `[[rule]]` tables: threshold rules on hub readings.
    pub rules: Vec<RuleSection>,
    /// The file's text, kept to locate errors found later (plugin checks).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
    /// Members of this group may operate (sim, set, reload) besides root and sited's own user.
    #[serde(default)]
    pub operator_group: Option<String>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            control_socket: default_control_socket(),
            state_dir: default_state_dir(),
            plugin_dir: default_plugin_dir(),
            operator_group: None,
        }
    }
}

fn default_control_socket() -> PathBuf {
    PathBuf::from(site_proto::DEFAULT_SOCKET)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sited")
}

fn default_plugin_dir() -> PathBuf {
    PathBuf::from("/usr/lib/sited/plugins")
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HardwareSection {
    #[serde(default)]
    pub backend: BackendKind,
    /// cdev only: the GPIO chip's label (e.g. `pinctrl-bcm2711`) or a `/dev/gpiochipN` path.
    #[serde(default)]
    pub chip: Option<String>,
    /// rppal and cdev: the PWM chip servos use, by its device: a device-tree node
    /// (`/axi/pcie@120000/rp1/pwm@98000`), a `/sys/devices/...` path or a device name
    /// (`1f00098000.pwm`). Default: a Raspberry Pi's own PWM device. A device's `pwm-chip`
    /// number overrides it.
    #[serde(default)]
    pub pwm_chip: Option<String>,
    /// sim only: a file the simulated pins are mirrored into (for tests and demos).
    #[serde(default)]
    pub sim_pins: Option<PathBuf>,
    /// sim only: a Unix datagram socket that plays the wires, for benchmarks: a datagram
    /// `<pin> <high|low> <monotonic ns>` is an edge stamped at that time (as the kernel
    /// stamps a real one), waiting in the socket until the loop reads it; every output write
    /// is sent back to the last sender as `<monotonic ns> <pin> <high|low|pulse ns>`.
    #[serde(default)]
    pub sim_wire: Option<PathBuf>,
}

/// One `[[device]]` table. `name`, `kind` and `pin` are the host's; every other key belongs
/// to the kind and is checked by its plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSection {
    pub name: String,
    pub kind: String,
    pub pin: Pin,
    /// The kind's own keys, as written.
    pub options: toml::Table,
}

impl DeviceSection {
    /// The JSON the plugin receives: the table minus `name` and `kind`.
    pub fn plugin_config_json(&self) -> String {
        let mut table = self.options.clone();
        table.insert("pin".into(), toml::Value::Integer(i64::from(self.pin)));
        // toml values always map onto JSON (datetimes become strings).
        serde_json::to_string(&table).unwrap_or_else(|_| "{}".into())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    hardware: HardwareSection,
    #[serde(default)]
    device: Vec<RawDevice>,
    access: Option<AccessSection>,
    emergency: Option<EmergencySection>,
    office: Option<OfficeSection>,
    hub: Option<HubSection>,
    link: Option<LinkSection>,
    #[serde(default)]
    rule: Vec<RuleSection>,
}

#[derive(Deserialize)]
struct RawDevice {
    name: String,
    kind: String,
    pin: i64,
    #[serde(flatten)]
    options: toml::Table,
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, Error> {
    // Absolute, so `status` and reloads name the same file whatever the working directory.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &text)
}

/// Parses and checks config text; `path` names it in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Error> {
    let locator = Locator { file: path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| locator.toml_error(&e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut daemon = raw.daemon;
    let mut hardware = raw.hardware;
    let mut hub = raw.hub;
    for p in [
        &mut daemon.control_socket,
        &mut daemon.state_dir,
        &mut daemon.plugin_dir,
    ]
    .into_iter()
    .chain(hardware.sim_pins.as_mut())
    .chain(hardware.sim_wire.as_mut())
    .chain(hub.as_mut().map(|h| &mut h.event_log))
    {
        *p = resolve(base, p);
    }
    let mut link = raw.link;
    for p in hub
        .as_mut()
        .into_iter()
        .flat_map(|h| {
            [
                &mut h.device_log,
                &mut h.keys,
                &mut h.tls_cert,
                &mut h.tls_key,
            ]
        })
        .chain(link.as_mut().map(|l| &mut l.secret_file))
        .flatten()
    {
        *p = resolve(base, p);
    }
    let mut devices = Vec::with_capacity(raw.device.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut pins: HashMap<Pin, usize> = HashMap::new();
    for (i, dev) in raw.device.into_iter().enumerate() {
        if !valid_name(&dev.name) {
            return Err(locator.at_device(
                i,
                "name",
                format!(
                    "\"{}\" is not a valid device name (use letters, digits, `_` and `-`, starting with a letter, at most 64 characters)",
                    dev.name
                ),
            ));
        }
        if !valid_name(&dev.kind) {
            return Err(locator.at_device(
                i,
                "kind",
                format!("\"{}\" is not a device kind", dev.kind),
            ));
        }
        let pin = Pin::try_from(dev.pin)
            .ok()
            .filter(|p| *p < 1024)
            .ok_or_else(|| {
                locator.at_device(
                    i,
                    "pin",
                    format!("{} is not a GPIO number (0-1023)", dev.pin),
                )
            })?;
        if let Some(&first) = names.get(&dev.name) {
            return Err(locator.at_device(
                i,
                "name",
                format!(
                    "device \"{}\" is already defined (device[{first}])",
                    dev.name
                ),
            ));
        }
        if let Some(&first) = pins.get(&pin) {
            return Err(locator.at_device(
                i,
                "pin",
                format!(
                    "GPIO {pin} is already used by device \"{}\"",
                    devices_name(&devices, first)
                ),
            ));
        }
        names.insert(dev.name.clone(), i);
        pins.insert(pin, i);
        devices.push(DeviceSection {
            name: dev.name,
            kind: dev.kind,
            pin,
            options: dev.options,
        });
    }
    let config = Config {
        file: path.to_path_buf(),
        daemon,
        hardware,
        devices,
        access: raw.access,
        emergency: raw.emergency,
        office: raw.office,
        hub,
        link,
        rules: raw.rule,
        source: text.to_string(),
    };
    config.check_site()?;
    Ok(config)
}

/// `p` relative to `base`, with `.` and `..` folded away so logs show plain paths.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in base.join(p).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn devices_name(devices: &[DeviceSection], i: usize) -> &str {
    devices.get(i).map(|d| d.name.as_str()).unwrap_or("?")
}

/// Device names appear in `sitectl` commands and logs: keep them plain.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Config {
    /// The hub's keys file: `[hub] keys`, or `keys.toml` in the state directory.
    pub fn keys_file(&self) -> Option<PathBuf> {
        self.hub.as_ref().map(|h| {
            h.keys
                .clone()
                .unwrap_or_else(|| self.daemon.state_dir.join(crate::keys::KEYS_FILE))
        })
    }

    /// An error about `[section] key`, located in this config's file.
    pub fn section_error(&self, section: &str, key: &str, message: String) -> Error {
        let locator = Locator {
            file: &self.file,
            text: &self.source,
        };
        Error {
            file: self.file.clone(),
            line: locator.line_of_key(section, key),
            key: Some(format!("{section}.{key}")),
            message,
        }
    }

    /// An error about device `index`'s `key`, located in this config's file.
    pub fn device_error(&self, index: usize, key: &str, message: String) -> Error {
        Locator {
            file: &self.file,
            text: &self.source,
        }
        .at_device(index, key, message)
    }

    /// An error about `[[rule]]` number `index`'s `key`, located in this config's file.
    pub fn rule_error(&self, index: usize, key: &str, message: String) -> Error {
        Locator {
            file: &self.file,
            text: &self.source,
        }
        .at_item("rule", index, key, message)
    }

    /// An error a plugin reported about device `index`: points at the key the message names
    /// (serde's "unknown field `x`", or a key quoted in a check), else at the table.
    pub fn plugin_error(&self, index: usize, message: &str) -> Error {
        let key = self
            .devices
            .get(index)
            .and_then(|d| mentioned_key(message, d.options.keys().map(String::as_str)))
            .unwrap_or_default();
        self.device_error(index, &key, message.to_string())
    }
}

/// The key a message is about: a backquoted name first (serde's style), else the longest
/// option name that appears in the text.
fn mentioned_key<'a>(message: &str, keys: impl Iterator<Item = &'a str>) -> Option<String> {
    if let Some(start) = message.find('`')
        && let Some(len) = message[start + 1..].find('`')
    {
        return Some(message[start + 1..start + 1 + len].to_string());
    }
    keys.filter(|k| message.contains(k))
        .max_by_key(|k| k.len())
        .map(str::to_string)
}

/// Finds lines for keys, using toml's spanned document.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn toml_error(&self, e: &toml::de::Error) -> Error {
        let line = e.span().map(|s| self.line_of(s.start));
        let key = e.span().and_then(|s| self.key_at(s.start));
        Error {
            file: self.file.to_path_buf(),
            line,
            key,
            message: e.message().trim().replace('\n', " "),
        }
    }

    /// The dotted path of the key whose span starts at `offset`, if it is a key.
    fn key_at(&self, offset: usize) -> Option<String> {
        let doc = toml::de::DeTable::parse(self.text).ok()?;
        fn walk(table: &toml::de::DeTable<'_>, prefix: &str, offset: usize) -> Option<String> {
            for (k, v) in table.iter() {
                let name = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                if k.span().start == offset || v.span().start == offset {
                    return Some(name);
                }
                match v.get_ref() {
                    toml::de::DeValue::Table(t) => {
                        if let Some(found) = walk(t, &name, offset) {
                            return Some(found);
                        }
                    }
                    toml::de::DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if let toml::de::DeValue::Table(t) = item.get_ref()
                                && let Some(found) = walk(t, &format!("{name}[{i}]"), offset)
                            {
                                return Some(found);
                            }
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        walk(doc.get_ref(), "", offset)
    }

    /// The line of `[section] key`, or of the section header when the key is not written.
    fn line_of_key(&self, section: &str, key: &str) -> Option<usize> {
        let doc = toml::de::DeTable::parse(self.text).ok()?;
        let (_, table) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == section)?;
        if let toml::de::DeValue::Table(t) = table.get_ref()
            && let Some((k, _)) = t.iter().find(|(k, _)| k.get_ref() == key)
        {
            return Some(self.line_of(k.span().start));
        }
        Some(self.line_of(table.span().start))
    }

    /// An error about `device[index].key` (or the device table itself when `key` is empty).
    fn at_device(&self, index: usize, key: &str, message: String) -> Error {
        self.at_item("device", index, key, message)
    }

    /// An error about `array[index].key` of an array of tables (`[[device]]`, `[[rule]]`), or
    /// about the table itself when `key` is empty.
    fn at_item(&self, array: &str, index: usize, key: &str, message: String) -> Error {
        let mut line = None;
        if let Ok(doc) = toml::de::DeTable::parse(self.text) {
            let device = doc
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == array)
                .and_then(|(_, v)| match v.get_ref() {
                    toml::de::DeValue::Array(items) => items.get(index),
                    _ => None,
                });
            if let Some(device) = device {
                line = Some(self.line_of(device.span().start));
                if let toml::de::DeValue::Table(t) = device.get_ref()
                    && let Some((k, _)) = t.iter().find(|(k, _)| k.get_ref() == key)
                {
                    line = Some(self.line_of(k.span().start));
                }
            }
        }
        let path = if key.is_empty() {
            format!("{array}[{index}]")
        } else {
            format!("{array}[{index}].{key}")
        };
        Error {
            file: self.file.to_path_buf(),
            line,
            key: Some(path),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, Error> {
        parse(Path::new("/etc/sited/test.toml"), text)
    }

    const GOOD: &str = r#"
[daemon]
control-socket = "run/control.sock"
operator-group = "staff"

[hardware]
backend = "sim"

[[device]]
name = "entry_button"
kind = "button"
pin = 17
debounce-ms = 30

[[device]]
name = "entry_door"
kind = "servo"
pin = 18
"#;

    #[test]
    fn good_config_parses_with_kind_options_kept_for_the_plugin() {
        let cfg = parse_str(GOOD).expect("valid");
        assert_eq!(cfg.hardware.backend, BackendKind::Sim);
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(
            cfg.devices[0].options.get("debounce-ms"),
            Some(&toml::Value::Integer(30))
        );
        assert_eq!(
            cfg.devices[0].plugin_config_json(),
            r#"{"debounce-ms":30,"pin":17}"#
        );
        assert_eq!(cfg.daemon.operator_group.as_deref(), Some("staff"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let cfg = parse_str(GOOD).expect("valid");
        assert_eq!(
            cfg.daemon.control_socket,
            PathBuf::from("/etc/sited/run/control.sock")
        );
        assert_eq!(cfg.daemon.state_dir, PathBuf::from("/var/lib/sited"));
    }

    #[test]
    fn the_device_log_is_off_by_default_relative_to_the_config_and_a_file_of_its_own() {
        assert_eq!(
            parse_str("[hub]\n")
                .expect("valid")
                .hub
                .expect("hub")
                .device_log,
            None
        );
        let cfg = parse_str("[hub]\ndevice-log = \"log/devices.log\"\n").expect("valid");
        assert_eq!(
            cfg.hub.expect("hub").device_log,
            Some(PathBuf::from("/etc/sited/log/devices.log"))
        );
        let err = parse_str(
            "[hub]\nevent-log = \"/var/log/sited/events.log\"\ndevice-log = \"/var/log/sited/events.log\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("hub.device-log"), "{err}");
        assert!(err.to_string().contains("also the event log"), "{err}");
        // The same file under another name.
        let dir = tempfile::tempdir().expect("tempdir");
        let events = dir.path().join("events.log");
        std::fs::write(&events, "").expect("write");
        let link = dir.path().join("devices.log");
        std::os::unix::fs::symlink(&events, &link).expect("symlink");
        let err = parse_str(&format!(
            "[hub]\nevent-log = \"{}\"\ndevice-log = \"{}\"\n",
            events.display(),
            link.display()
        ))
        .unwrap_err();
        assert!(err.to_string().contains("also the event log"), "{err}");
    }

    #[test]
    fn parent_relative_paths_are_folded() {
        let text = "[daemon]\nplugin-dir = \"../target/debug\"\n[hardware]\nsim-pins = \"../target/demo/pins.json\"\n";
        let cfg = parse(Path::new("/repo/etc/demo.toml"), text).expect("valid");
        assert_eq!(cfg.daemon.plugin_dir, PathBuf::from("/repo/target/debug"));
        assert_eq!(
            cfg.hardware.sim_pins,
            Some(PathBuf::from("/repo/target/demo/pins.json"))
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse_str("").expect("valid");
        assert_eq!(cfg.daemon, DaemonSection::default());
        assert_eq!(cfg.hardware.backend, BackendKind::Auto);
        assert!(cfg.devices.is_empty());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse_str("[daemon]\ncontrol-socket = \"/x\"\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(err.key.as_deref(), Some("daemon.colour"), "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
        assert!(
            err.to_string()
                .starts_with("/etc/sited/test.toml:3: daemon.colour: "),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse_str("[hardware]\nbackend = 5\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn bad_toml_names_line() {
        let err = parse_str("[daemon\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn unknown_backend_is_rejected() {
        let err = parse_str("[hardware]\nbackend = \"gpiozero\"\n").unwrap_err();
        assert!(err.message.contains("unknown variant"), "{err}");
    }

    #[test]
    fn pin_used_twice_names_the_second_device_line_and_the_first_device() {
        let text = "[[device]]\nname = \"a\"\nkind = \"led\"\npin = 5\n\n[[device]]\nname = \"b\"\nkind = \"led\"\npin = 5\n";
        let err = parse_str(text).unwrap_err();
        assert_eq!(err.line, Some(9), "{err}");
        assert_eq!(err.key.as_deref(), Some("device[1].pin"));
        assert!(
            err.message.contains("already used by device \"a\""),
            "{err}"
        );
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let text = "[[device]]\nname = \"a\"\nkind = \"led\"\npin = 5\n[[device]]\nname = \"a\"\nkind = \"led\"\npin = 6\n";
        let err = parse_str(text).unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("already defined"), "{err}");
    }

    #[test]
    fn missing_pin_is_rejected() {
        let err = parse_str("[[device]]\nname = \"a\"\nkind = \"led\"\n").unwrap_err();
        assert!(err.message.contains("missing field `pin`"), "{err}");
    }

    #[test]
    fn negative_or_huge_pin_is_rejected() {
        let err = parse_str("[[device]]\nname = \"a\"\nkind = \"led\"\npin = -1\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        let err = parse_str("[[device]]\nname = \"a\"\nkind = \"led\"\npin = 5000\n").unwrap_err();
        assert!(err.message.contains("not a GPIO number"), "{err}");
    }

    #[test]
    fn invalid_device_name_is_rejected() {
        let err =
            parse_str("[[device]]\nname = \"front door\"\nkind = \"led\"\npin = 1\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("device[0].name"));
    }

    #[test]
    fn plugin_error_points_at_the_key_it_names() {
        let cfg = parse_str(GOOD).expect("valid");
        let err = cfg.plugin_error(0, "unknown field `debounce-ms`, expected `pin`");
        assert_eq!(err.line, Some(13), "{err}");
        assert_eq!(err.key.as_deref(), Some("device[0].debounce-ms"));
        let err = cfg.plugin_error(1, "no such plugin");
        assert_eq!(err.line, Some(15), "{err}");
        assert_eq!(err.key.as_deref(), Some("device[1]"));
    }
}
