//! Which PWM chip drives the servos, chosen the way GPIO chips are: by the device behind it,
//! because chip numbers move. On a Raspberry Pi 5 the RP1's PWM block was `pwmchip2` on 6.6
//! kernels and is `pwmchip0` from 6.12, while 6.6's `pwmchip0` is the fan's; a servo configured
//! by number could silently drive the fan.
//!
//! `[hardware] pwm-chip` names the device: a device-tree node (`/axi/pcie@120000/rp1/pwm@98000`),
//! a sysfs device path (`/sys/devices/platform/axi/1000120000.pcie/1f00098000.pwm`) or a device
//! name (`1f00098000.pwm`). Unset, a Raspberry Pi's own PWM device is used (found by its
//! device-tree `compatible`, and on a Pi 5 its address). A device's `pwm-chip` number still
//! overrides both.

use super::board::Board;
use super::{Error, Pin};
use std::path::{Path, PathBuf};

/// One PWM chip as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PwmChip {
    /// N in `pwmchipN`.
    pub number: u32,
    /// The device's sysfs path (`/sys/devices/platform/...`).
    pub device: PathBuf,
    /// Its device-tree node (`/axi/pcie@120000/rp1/pwm@98000`), where it has one.
    pub of_node: Option<String>,
    pub compatible: Vec<String>,
}

impl PwmChip {
    fn name(&self) -> &str {
        self.device
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        match &self.of_node {
            Some(node) => format!("pwmchip{} ({}, {node})", self.number, self.name()),
            None => format!("pwmchip{} ({})", self.number, self.name()),
        }
    }
}

/// Which BCM pins a Raspberry Pi routes to which channel of its PWM device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiPwm {
    /// Pi 1-4 (BCM2835..2711), with the `pwm` or `pwm-2chan` overlay: GPIO 12/18 are channel 0
    /// and 13/19 channel 1.
    Bcm,
    /// Pi 5 (RP1): GPIO 12, 13, 18, 19 are channels 0, 1, 2, 3 of the RP1's PWM0.
    Rp1,
}

impl PiPwm {
    pub fn of(board: &Board) -> Option<PiPwm> {
        let model = board.model.as_deref()?;
        let rp1 = [
            "Raspberry Pi 5",
            "Raspberry Pi 500",
            "Compute Module 5",
            "5-model-b",
            "5-compute-module",
        ];
        Some(if rp1.iter().any(|m| model.contains(m)) {
            PiPwm::Rp1
        } else {
            PiPwm::Bcm
        })
    }

    pub fn channel_for(self, pin: Pin) -> Option<u32> {
        match (self, pin) {
            (PiPwm::Bcm, 12 | 18) => Some(0),
            (PiPwm::Bcm, 13 | 19) => Some(1),
            (PiPwm::Rp1, 12) => Some(0),
            (PiPwm::Rp1, 13) => Some(1),
            (PiPwm::Rp1, 18) => Some(2),
            (PiPwm::Rp1, 19) => Some(3),
            _ => None,
        }
    }

    /// How to turn the Pi's PWM on.
    pub fn enable_hint(self) -> &'static str {
        match self {
            PiPwm::Bcm => {
                "add `dtoverlay=pwm-2chan,pin=12,func=4,pin2=13,func2=4` to /boot/firmware/config.txt and reboot, or set [hardware] pwm-chip"
            }
            PiPwm::Rp1 => {
                "add a PWM overlay for the RP1 (e.g. `dtoverlay=pwm-2chan,pin=12,func=4,pin2=13,func2=4`) to /boot/firmware/config.txt and reboot, or set [hardware] pwm-chip"
            }
        }
    }

    /// Is `chip` this Pi's own PWM device (the one the header pins are routed to)?
    fn owns(self, chip: &PwmChip) -> bool {
        match self {
            // The SoC's PWM0 (the BCM2711's second block, pwm@7e20c800, is not on the header).
            PiPwm::Bcm => {
                chip.compatible.iter().any(|c| c == "brcm,bcm2835-pwm")
                    && (chip
                        .of_node
                        .as_deref()
                        .is_some_and(|n| n.ends_with("pwm@7e20c000"))
                        || chip.name().ends_with("20c000.pwm"))
            }
            // The RP1 has two PWM blocks; the fan uses the second (pwm@9c000).
            PiPwm::Rp1 => {
                chip.compatible.iter().any(|c| c == "raspberrypi,rp1-pwm")
                    && (chip
                        .of_node
                        .as_deref()
                        .is_some_and(|n| n.ends_with("pwm@98000"))
                        || chip.name().ends_with("98000.pwm"))
            }
        }
    }
}

/// Every PWM chip under `class` (`/sys/class/pwm`), with its device and device-tree node
/// (`dt_base` is `/sys/firmware/devicetree/base`), by number.
pub fn list(class: &Path, dt_base: &Path) -> Vec<PwmChip> {
    let Ok(entries) = std::fs::read_dir(class) else {
        return Vec::new();
    };
    let mut chips: Vec<PwmChip> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let number: u32 = name.strip_prefix("pwmchip")?.parse().ok()?;
            let device = std::fs::canonicalize(e.path().join("device")).ok()?;
            let of_node = std::fs::canonicalize(device.join("of_node"))
                .ok()
                .and_then(|node| {
                    let dt_base = std::fs::canonicalize(dt_base).ok()?;
                    let rel = node.strip_prefix(&dt_base).ok()?;
                    Some(format!("/{}", rel.display()))
                });
            let compatible = std::fs::read(device.join("of_node/compatible"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(PwmChip {
                number,
                device,
                of_node,
                compatible,
            })
        })
        .collect();
    chips.sort_by_key(|c| c.number);
    chips
}

/// The chip the servos use unless a device names a number: the one `[hardware] pwm-chip`
/// names, or the Pi's own. `Ok(None)`: no setting and no Pi PWM device (a device then needs a
/// `pwm-chip` number, or software PWM on a Pi).
/// The chip chosen, and whether it is the Pi's own PWM device (whose pin routing then holds).
#[derive(Debug, PartialEq, Eq)]
pub struct Selected {
    pub number: u32,
    pub what: String,
    pub pis_own: bool,
}

pub fn select(
    chips: &[PwmChip],
    wanted: Option<&str>,
    pi: Option<PiPwm>,
) -> Result<Option<Selected>, Error> {
    let selected = |c: &PwmChip| Selected {
        number: c.number,
        what: c.describe(),
        pis_own: pi.is_some_and(|pi| pi.owns(c)),
    };
    if let Some(wanted) = wanted {
        let matches = |c: &PwmChip| {
            if wanted.starts_with('/') {
                // A device-tree node, or the device's sysfs path.
                c.of_node.as_deref() == Some(wanted.trim_end_matches('/'))
                    || c.device == Path::new(wanted)
            } else {
                c.name() == wanted
            }
        };
        return match chips.iter().find(|c| matches(c)) {
            Some(c) => Ok(Some(selected(c))),
            None => Err(Error::PwmChipNotFound {
                wanted: wanted.to_string(),
                found: describe_all(chips),
            }),
        };
    }
    Ok(pi.and_then(|pi| chips.iter().find(|c| pi.owns(c)).map(selected)))
}

pub fn describe_all(chips: &[PwmChip]) -> String {
    if chips.is_empty() {
        return "none".into();
    }
    chips
        .iter()
        .map(PwmChip::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs PWM class and device tree in a temp dir, as a Pi 5 on a 6.6 kernel shows them:
    /// pwmchip0 is the RP1's second block (the fan), pwmchip2 the header pins' block.
    fn pi5_66() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        let class = root.path().join("class/pwm");
        let dt = root.path().join("dt");
        std::fs::create_dir_all(&class).expect("class");
        for (n, addr) in [(0, "9c000"), (2, "98000")] {
            let device = root.path().join(format!(
                "devices/platform/axi/1000120000.pcie/1f000{addr}.pwm"
            ));
            let node = dt.join(format!("axi/pcie@120000/rp1/pwm@{addr}"));
            std::fs::create_dir_all(&device).expect("device");
            std::fs::create_dir_all(&node).expect("node");
            std::fs::write(node.join("compatible"), b"raspberrypi,rp1-pwm\0").expect("compatible");
            std::os::unix::fs::symlink(&node, device.join("of_node")).expect("of_node");
            let chip = device.join(format!("pwm/pwmchip{n}"));
            std::fs::create_dir_all(&chip).expect("chip");
            std::os::unix::fs::symlink(&device, chip.join("device")).expect("device link");
            std::os::unix::fs::symlink(&chip, class.join(format!("pwmchip{n}")))
                .expect("class link");
        }
        (root, class, dt)
    }

    #[test]
    fn a_pi_5_uses_the_header_pins_block_whatever_its_number() {
        let (_root, class, dt) = pi5_66();
        let chips = list(&class, &dt);
        assert_eq!(chips.len(), 2);
        assert_eq!(
            chips[0].of_node.as_deref(),
            Some("/axi/pcie@120000/rp1/pwm@9c000")
        );
        let found = select(&chips, None, Some(PiPwm::Rp1))
            .expect("ok")
            .expect("found");
        assert_eq!(found.number, 2, "{}", found.what);
        assert!(found.what.contains("1f00098000.pwm"), "{}", found.what);
        assert!(found.pis_own);
        // The fan's block, named by hand, is used, but without the Pi's pin routing.
        let fan = select(&chips, Some("1f0009c000.pwm"), Some(PiPwm::Rp1))
            .expect("ok")
            .expect("found");
        assert_eq!((fan.number, fan.pis_own), (0, false));
        assert_eq!(PiPwm::Rp1.channel_for(18), Some(2));
    }

    #[test]
    fn a_chip_is_named_by_node_device_path_or_device_name() {
        let (_root, class, dt) = pi5_66();
        let chips = list(&class, &dt);
        let number = |wanted: &str| {
            select(&chips, Some(wanted), None)
                .expect("ok")
                .expect("found")
                .number
        };
        assert_eq!(number("/axi/pcie@120000/rp1/pwm@98000"), 2);
        assert_eq!(number("1f00098000.pwm"), 2);
        assert_eq!(number(&chips[0].device.display().to_string()), 0);
        let err = select(&chips, Some("fe20c000.pwm"), None).expect_err("absent");
        let text = err.to_string();
        assert!(text.contains("no PWM chip \"fe20c000.pwm\""), "{text}");
        assert!(
            text.contains("pwmchip2 (1f00098000.pwm, /axi/pcie@120000/rp1/pwm@98000)"),
            "{text}"
        );
    }

    #[test]
    fn the_pis_route_their_pwm_pins_to_channels() {
        for (pin, bcm, rp1) in [
            (12, Some(0), Some(0)),
            (18, Some(0), Some(2)),
            (13, Some(1), Some(1)),
            (19, Some(1), Some(3)),
            (17, None, None),
        ] {
            assert_eq!(PiPwm::Bcm.channel_for(pin), bcm, "GPIO {pin}");
            assert_eq!(PiPwm::Rp1.channel_for(pin), rp1, "GPIO {pin}");
        }
    }

    #[test]
    fn nothing_is_assumed_off_a_pi() {
        let (_root, class, dt) = pi5_66();
        let chips = list(&class, &dt);
        assert_eq!(select(&chips, None, None).expect("ok"), None);
        assert_eq!(
            select(&chips, None, Some(PiPwm::Bcm)).expect("ok"),
            None,
            "no bcm2835-pwm here"
        );
    }
}
