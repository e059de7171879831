//! Which board this is: a Raspberry Pi (and which), or not. Read from the same files rppal
//! reads: the device tree's `model` and `compatible` (under /sys/firmware/devicetree/base,
//! which /proc/device-tree links to), `/proc/cpuinfo`'s `Model` and `Revision` lines, and
//! `/proc/version` (rppal picks the Pi 5's PWM chip by the kernel version). The unit's sandbox
//! must leave all of them readable; what was read, and what it said, is kept so `sitectl status`
//! can show why a board was or was not taken for a Pi.

use std::path::Path;

/// What the board detection found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// The Raspberry Pi's model string (`Raspberry Pi 3 Model B Rev 1.2`), if this is one.
    pub model: Option<String>,
    /// Each file read and what it said, in the order read.
    pub read: Vec<(String, String)>,
}

pub const DT_MODEL: &str = "/sys/firmware/devicetree/base/model";
pub const DT_COMPATIBLE: &str = "/sys/firmware/devicetree/base/compatible";
pub const CPUINFO: &str = "/proc/cpuinfo";
pub const VERSION: &str = "/proc/version";

impl Board {
    /// This machine.
    pub fn detect() -> Board {
        Board::detect_in(Path::new("/"))
    }

    /// The board whose files are under `root` (`/` for this machine; a directory in tests).
    pub fn detect_in(root: &Path) -> Board {
        let read = |path: &str| std::fs::read(root.join(path.trim_start_matches('/')));
        let mut found = Vec::new();
        let mut note = |path: &str, what: String| found.push((path.to_string(), what));

        let dt_model = match read(DT_MODEL) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text
                    .split('\0')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                note(DT_MODEL, format!("{text:?}"));
                Some(text)
            }
            Err(e) => {
                note(DT_MODEL, unreadable(&e));
                None
            }
        };
        let compatible: Vec<String> = match read(DT_COMPATIBLE) {
            Ok(bytes) => {
                let list: Vec<String> = String::from_utf8_lossy(&bytes)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                note(DT_COMPATIBLE, list.join(", "));
                list
            }
            Err(e) => {
                note(DT_COMPATIBLE, unreadable(&e));
                Vec::new()
            }
        };
        let cpu_model = match read(CPUINFO) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let field = |name: &str| {
                    text.lines().find_map(|l| {
                        let (key, value) = l.split_once(':')?;
                        (key.trim() == name).then(|| value.trim().to_string())
                    })
                };
                let (model, revision) = (field("Model"), field("Revision"));
                let said = match (&model, &revision) {
                    (None, None) => "no Model or Revision line".to_string(),
                    (Some(m), None) => format!("Model {m:?}"),
                    (None, Some(r)) => format!("Revision {r}"),
                    (Some(m), Some(r)) => format!("Model {m:?}, Revision {r}"),
                };
                note(CPUINFO, said);
                model
            }
            Err(e) => {
                note(CPUINFO, unreadable(&e));
                None
            }
        };
        match read(VERSION) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let release = text.split_whitespace().nth(2).unwrap_or("?").to_string();
                note(VERSION, format!("Linux {release}"));
            }
            Err(e) => note(VERSION, unreadable(&e)),
        }

        let is_pi = |m: &String| m.starts_with("Raspberry Pi");
        let model = dt_model
            .filter(is_pi)
            .or_else(|| cpu_model.filter(is_pi))
            .or_else(|| {
                compatible
                    .iter()
                    .find(|c| c.starts_with("raspberrypi,"))
                    .map(|c| format!("Raspberry Pi ({c})"))
            });
        Board { model, read: found }
    }

    /// What was read, on one line: `/sys/...model: "…"; /proc/cpuinfo: …`.
    pub fn evidence(&self) -> String {
        self.read
            .iter()
            .map(|(path, what)| format!("{path}: {what}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// For `sitectl status`: the model, or "not a Raspberry Pi".
    pub fn describe(&self) -> String {
        match &self.model {
            Some(model) => model.clone(),
            None => "not a Raspberry Pi".into(),
        }
    }
}

fn unreadable(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "absent".into()
    } else {
        format!("unreadable ({e})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(files: &[(&str, &[u8])]) -> Board {
        let root = tempfile::tempdir().expect("tempdir");
        for (path, bytes) in files {
            let path = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        Board::detect_in(root.path())
    }

    #[test]
    fn a_pi_3_is_known_by_its_device_tree_model() {
        let b = board(&[
            (DT_MODEL, b"Raspberry Pi 3 Model B\0"),
            (DT_COMPATIBLE, b"raspberrypi,3-model-b\0brcm,bcm2837\0"),
            (CPUINFO, b"processor\t: 0\nBogoMIPS\t: 125.00\n"),
            (
                VERSION,
                b"Linux version 6.1.0-57-arm64 (debian-kernel@lists.debian.org) ...\n",
            ),
        ]);
        assert_eq!(b.model.as_deref(), Some("Raspberry Pi 3 Model B"));
        assert_eq!(b.describe(), "Raspberry Pi 3 Model B");
        assert_eq!(
            b.evidence(),
            "/sys/firmware/devicetree/base/model: \"Raspberry Pi 3 Model B\"; \
             /sys/firmware/devicetree/base/compatible: raspberrypi,3-model-b, brcm,bcm2837; \
             /proc/cpuinfo: no Model or Revision line; /proc/version: Linux 6.1.0-57-arm64"
        );
    }

    #[test]
    fn cpuinfo_alone_is_enough_as_for_rppal() {
        let b = board(&[(
            CPUINFO,
            b"Hardware\t: BCM2835\nRevision\t: c04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n",
        )]);
        assert_eq!(b.model.as_deref(), Some("Raspberry Pi 5 Model B Rev 1.0"));
        assert!(
            b.evidence().contains(
                "/proc/cpuinfo: Model \"Raspberry Pi 5 Model B Rev 1.0\", Revision c04170"
            ),
            "{}",
            b.evidence()
        );
        assert!(
            b.evidence()
                .contains("/sys/firmware/devicetree/base/model: absent")
        );
    }

    #[test]
    fn a_pc_is_not_a_pi_and_says_what_was_read() {
        let b = board(&[
            (CPUINFO, b"processor\t: 0\nmodel name\t: AMD EPYC\n"),
            (VERSION, b"Linux version 6.1.0-57-amd64 (x) #1 SMP\n"),
        ]);
        assert_eq!(b.model, None);
        assert_eq!(b.describe(), "not a Raspberry Pi");
        assert_eq!(
            b.evidence(),
            "/sys/firmware/devicetree/base/model: absent; /sys/firmware/devicetree/base/compatible: absent; \
             /proc/cpuinfo: no Model or Revision line; /proc/version: Linux 6.1.0-57-amd64"
        );
    }

    #[test]
    fn another_arm_board_is_not_a_pi() {
        let b = board(&[
            (DT_MODEL, b"Pine64 RockPro64 v2.1\0"),
            (DT_COMPATIBLE, b"pine64,rockpro64\0rockchip,rk3399\0"),
        ]);
        assert_eq!(b.model, None);
    }

    #[test]
    fn a_compatible_string_alone_names_the_pi() {
        let b = board(&[(DT_COMPATIBLE, b"raspberrypi,5-model-b\0brcm,bcm2712\0")]);
        assert_eq!(
            b.model.as_deref(),
            Some("Raspberry Pi (raspberrypi,5-model-b)")
        );
    }
}
