//! The Rust trait a plugin implements. Each device kind is a plain state machine driven by
//! edges, timers and commands; it touches hardware only through [`Host`].

use crate::host::{Host, Level};
use serde::de::DeserializeOwned;

/// Whether a device reads an input or drives an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Input,
    Output,
}

impl Role {
    pub fn to_raw(self) -> u32 {
        match self {
            Role::Input => crate::abi::ROLE_INPUT,
            Role::Output => crate::abi::ROLE_OUTPUT,
        }
    }
}

/// One device instance. The host calls these on the loop thread, one at a time.
///
/// Errors are one-line messages for the site owner. A panic is caught at the boundary; the host
/// then puts the device in its safe state and shows it as faulted.
pub trait Device: Sized + 'static {
    /// The `kind = "..."` this plugin implements.
    const KIND: &'static str;
    const ROLE: Role;
    /// One line saying what the device is ("push button, debounced"), logged at load.
    const DESCRIPTION: &'static str = "";

    /// The device's config table (everything but `name` and `kind`), parsed with serde.
    /// Derive it with `#[serde(rename_all = "kebab-case", deny_unknown_fields)]`.
    type Config: DeserializeOwned;

    /// Semantic checks beyond the types (ranges, consistent pairs). Runs in `--check-config`.
    fn check(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Claims the pins, drives outputs to their safe level and publishes the first state.
    fn create(host: &mut dyn Host, config: Self::Config) -> Result<Self, String>;

    /// An edge on one of this device's input pins; `at_us` is on the host's monotonic clock.
    fn on_edge(
        &mut self,
        host: &mut dyn Host,
        pin: u32,
        level: Level,
        at_us: u64,
    ) -> Result<(), String> {
        let _ = (host, pin, level, at_us);
        Ok(())
    }

    /// A timer this device armed has fired.
    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        let _ = (host, id);
        Ok(())
    }

    /// `sitectl set <device> <value>` and site logic commands. Inputs take none.
    fn command(&mut self, host: &mut dyn Host, value: &str) -> Result<(), String> {
        let _ = (host, value);
        Err(format!(
            "a {} is an input and takes no commands",
            Self::KIND
        ))
    }

    /// Input devices: the pin and level that would make this device report `value`.
    fn simulate(&mut self, value: &str) -> Result<(u32, Level), String> {
        let _ = value;
        Err(format!(
            "a {} is an output; drive it with `sitectl set`",
            Self::KIND
        ))
    }

    /// Back to the safe state: outputs at their safe level, timers cancelled.
    fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String>;
}

/// Parses a device config the way the export macro does, for unit tests and `check`.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| config_error_text(json, &e))
}

/// serde_json appends "at line 1 column 57" to messages; the JSON is ours, not the user's
/// file, so that position would only mislead. The host maps the key back to the TOML line.
fn config_error_text(json: &str, e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    };
    // serde names the key for unknown and missing fields, but not for a value of the wrong
    // type or an unknown variant; without it the host could only point at the whole table.
    if e.is_data()
        && !text.contains("field `")
        && let Some(key) = key_at(json, e.line(), e.column())
    {
        return format!("`{key}`: {text}");
    }
    text
}

/// The top-level key whose value the (1-based) `line`/`column` falls in.
fn key_at(json: &str, line: usize, column: usize) -> Option<String> {
    let line_start: usize = json
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let prefix = json.get(..(line_start + column).min(json.len()))?;
    let mut depth = 0usize;
    let mut in_string: Option<usize> = None;
    let mut escaped = false;
    let mut last_string = None;
    let mut key = None;
    for (i, c) in prefix.char_indices() {
        if let Some(start) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = None;
                last_string = Some(&prefix[start..i]);
            }
            continue;
        }
        match c {
            '"' => in_string = Some(i + 1),
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            ':' if depth == 1 => key = last_string,
            _ => {}
        }
    }
    key.map(str::to_string)
}

/// Parses a value the way `sitectl` users write them for on/off outputs and inputs:
/// `on/off`, `active/inactive`, `1/0`, `true/false` (the `gpioset` vocabulary).
pub fn parse_on_off(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "active" | "1" | "true" | "high" => Some(true),
        "off" | "inactive" | "0" | "false" | "low" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_off_accepts_gpioset_words_and_rejects_others() {
        assert_eq!(parse_on_off("ON"), Some(true));
        assert_eq!(parse_on_off("inactive"), Some(false));
        assert_eq!(parse_on_off("1"), Some(true));
        assert_eq!(parse_on_off("maybe"), None);
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        pin: u32,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Typed {
        pin: u32,
        debounce_ms: u64,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Steady,
    }

    #[test]
    fn parse_config_type_error_names_the_key() {
        let err = parse_config::<Typed>(r#"{"pin":5,"debounce-ms":"soon"}"#).unwrap_err();
        assert!(err.starts_with("`debounce-ms`: invalid type"), "{err}");
        assert!(!err.contains("line 1"), "{err}");
    }

    #[test]
    fn parse_config_unknown_variant_names_the_key_first() {
        let json = "{\n  \"pin\": 5,\n  \"mode\": \"wail\",\n  \"debounce-ms\": 1\n}";
        let err = parse_config::<Typed>(json).unwrap_err();
        assert!(err.starts_with("`mode`: unknown variant `wail`"), "{err}");
    }

    #[test]
    fn parse_config_error_names_the_key_without_json_position() {
        let err = parse_config::<Cfg>(r#"{"pin": 3, "colour": "red"}"#).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(!err.contains("line 1"), "{err}");
    }
}
