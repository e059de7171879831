//! Finding a GPIO character device by its label, and what its errors mean. Both the cdev and
//! the rppal backend use this: cdev to open its chip, rppal to ask the kernel who holds a line.
//! Labels, not numbers, because chip numbers move between kernels.

use super::Error;
use gpiocdev::Chip;
use std::io;
use std::path::{Path, PathBuf};

/// The Raspberry Pi GPIO controllers, newest first: Pi 5 (RP1), Pi 4, Pi 1-3. Chips are found
/// by label because their numbers move (the Pi 5's went from gpiochip4 to gpiochip0 at 6.6.45).
pub const DEFAULT_CHIP_LABELS: &[&str] = &["pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835"];

/// What `gpioinfo` shows as the holder of our lines.
pub(super) const CONSUMER: &str = "sited";

/// The path of the chip `[hardware] chip` names: a label (as `gpiodetect` prints it) or, when it
/// starts with "/dev/", a path. `None` looks for the Raspberry Pi controllers
/// ([`DEFAULT_CHIP_LABELS`]).
pub(super) fn resolve(chip: Option<&str>) -> Result<PathBuf, Error> {
    match chip_wanted(chip) {
        ChipWanted::Path(path) => Ok(path.to_path_buf()),
        ChipWanted::Labels(labels) => {
            let probe = probe_chips()?;
            select_chip(&probe.found, &probe.denied, &labels)
        }
    }
}

/// Opens the chip at `path`, saying what to do if that fails.
pub(super) fn open(path: &Path) -> Result<Chip, Error> {
    Chip::from_path(path).map_err(|e| open_error(path, e))
}

/// What `[hardware] chip` asks for.
#[derive(Debug, PartialEq, Eq)]
enum ChipWanted<'a> {
    /// The first chip carrying the first of these labels that any chip carries.
    Labels(Vec<&'a str>),
    Path(&'a Path),
}

fn chip_wanted(chip: Option<&str>) -> ChipWanted<'_> {
    match chip {
        None => ChipWanted::Labels(DEFAULT_CHIP_LABELS.to_vec()),
        Some(path) if path.starts_with("/dev/") => ChipWanted::Path(Path::new(path)),
        Some(label) => ChipWanted::Labels(vec![label]),
    }
}

/// Every GPIO chip on the machine: those whose label could be read, and those we may not open.
struct ChipProbe {
    found: Vec<(PathBuf, String)>,
    denied: Vec<PathBuf>,
}

fn probe_chips() -> Result<ChipProbe, Error> {
    let paths = gpiocdev::chip::chips()
        .map_err(|e| Error::io("listing the GPIO chips in /dev", to_io(e)))?;
    let mut probe = ChipProbe {
        found: Vec::new(),
        denied: Vec::new(),
    };
    for path in paths {
        match Chip::from_path(&path).and_then(|chip| chip.info()) {
            Ok(info) => probe.found.push((path, info.label)),
            Err(e) if is_permission_errno(errno_of(&e)) => probe.denied.push(path),
            // A chip that vanished or misbehaves cannot be the one we want; say so quietly.
            Err(e) => log::debug!("hardware: skipping {}: {e}", path.display()),
        }
    }
    Ok(probe)
}

/// Picks the chip for the first label in `wanted` that any chip carries. A chip we may not
/// open might be the wanted one, so when nothing matches that is reported before "not found".
fn select_chip(
    found: &[(PathBuf, String)],
    denied: &[PathBuf],
    wanted: &[&str],
) -> Result<PathBuf, Error> {
    for label in wanted {
        if let Some((path, _)) = found.iter().find(|(_, l)| l == label) {
            return Ok(path.clone());
        }
    }
    if !denied.is_empty() {
        // Any of them may be the one wanted: name them all, and what was looked for.
        return Err(Error::ChipsDenied {
            wanted: wanted.join("\" or \""),
            denied: denied
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if found.is_empty() {
        return Err(Error::NoChips);
    }
    Err(Error::ChipNotFound {
        label: wanted.join("\" or \""),
        found: describe_chips(found),
    })
}

fn describe_chips(found: &[(PathBuf, String)]) -> String {
    if found.is_empty() {
        return "none".into();
    }
    found
        .iter()
        .map(|(path, label)| format!("\"{label}\" ({})", path.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a chip named by path could not be opened.
fn open_error(path: &Path, e: gpiocdev::Error) -> Error {
    match errno_of(&e) {
        Some(errno) if is_permission_errno(Some(errno)) => Error::PermissionDenied {
            path: path.display().to_string(),
        },
        Some(libc::ENOENT) => Error::ChipNotFound {
            label: path.display().to_string(),
            found: probe_chips()
                .map(|p| describe_chips(&p.found))
                .unwrap_or_else(|_| "none".into()),
        },
        _ => Error::io(format!("opening {}", path.display()), to_io(e)),
    }
}

/// Names who holds a line, from the consumer label the kernel reports for it.
pub(super) fn describe_holder(consumer: &str) -> String {
    match consumer {
        "" => "another program holds it (`gpioinfo` shows the line)".into(),
        CONSUMER => "another sited holds it (is a second instance running?)".into(),
        other => format!("\"{other}\" holds it"),
    }
}

pub(super) fn is_permission_errno(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EACCES) | Some(libc::EPERM))
}

/// The errno behind a gpiocdev error, when it carries one we can see: failures to open a chip
/// do; failed ioctls keep theirs inside a type gpiocdev does not export.
pub(super) fn errno_of(e: &gpiocdev::Error) -> Option<i32> {
    match e {
        gpiocdev::Error::Os(errno) => Some(errno.0),
        _ => None,
    }
}

pub(super) fn to_io(e: gpiocdev::Error) -> io::Error {
    match errno_of(&e) {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(e),
    }
}

/// Opens the Raspberry Pi's GPIO chip for reading line info only; the rppal backend uses it to
/// say who holds a busy pin. `None` if there is no such chip or we may not open it.
pub(super) fn open_pi_chip_for_line_info() -> Option<Chip> {
    let probe = probe_chips().ok()?;
    let path = select_chip(&probe.found, &[], DEFAULT_CHIP_LABELS).ok()?;
    Chip::from_path(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chips(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(path, label)| (PathBuf::from(path), label.to_string()))
            .collect()
    }

    fn os_error(errno: i32) -> gpiocdev::Error {
        gpiocdev::Error::from(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn the_pi5_controller_is_chosen_by_label_whatever_its_number() {
        let found = chips(&[
            ("/dev/gpiochip0", "gpio-brcmstb@107d508500"),
            ("/dev/gpiochip4", "pinctrl-rp1"),
            ("/dev/gpiochip10", "gpio-brcmstb@107d517c00"),
        ]);

        let path = select_chip(&found, &[], DEFAULT_CHIP_LABELS).expect("found");

        assert_eq!(path, PathBuf::from("/dev/gpiochip4"));
    }

    #[test]
    fn default_labels_are_tried_in_order_not_by_chip_number() {
        let found = chips(&[
            ("/dev/gpiochip0", "pinctrl-bcm2835"),
            ("/dev/gpiochip1", "pinctrl-bcm2711"),
        ]);

        let path = select_chip(&found, &[], DEFAULT_CHIP_LABELS).expect("found");

        assert_eq!(path, PathBuf::from("/dev/gpiochip1"));
    }

    #[test]
    fn an_unmatched_label_lists_the_labels_found() {
        let found = chips(&[
            ("/dev/gpiochip0", "gpio-sim.0-node0"),
            ("/dev/gpiochip1", "gpio-sim.0-node1"),
        ]);

        let err = select_chip(&found, &[], &["pinctrl-rp1"]).expect_err("no match");

        let msg = err.to_string();
        assert!(matches!(err, Error::ChipNotFound { .. }));
        assert!(msg.contains("\"pinctrl-rp1\""), "{msg}");
        assert!(
            msg.contains("\"gpio-sim.0-node0\" (/dev/gpiochip0), \"gpio-sim.0-node1\""),
            "{msg}"
        );
    }

    #[test]
    fn no_chips_at_all_is_its_own_error() {
        let err = select_chip(&[], &[], DEFAULT_CHIP_LABELS).expect_err("nothing");

        assert!(matches!(err, Error::NoChips));
    }

    #[test]
    fn an_unreadable_chip_is_reported_before_not_found() {
        let found = chips(&[("/dev/gpiochip1", "gpio-sim.0-node0")]);
        let denied = [PathBuf::from("/dev/gpiochip0")];

        let err = select_chip(&found, &denied, DEFAULT_CHIP_LABELS).expect_err("denied");

        assert!(
            matches!(&err, Error::ChipsDenied { denied, .. } if denied == "/dev/gpiochip0"),
            "{err:?}"
        );
        let denied = [
            PathBuf::from("/dev/gpiochip0"),
            PathBuf::from("/dev/gpiochip4"),
        ];
        let err = select_chip(&[], &denied, &["pinctrl-rp1"]).expect_err("denied");
        assert_eq!(
            err.to_string(),
            "permission denied on /dev/gpiochip0, /dev/gpiochip4, so the GPIO chip \"pinctrl-rp1\" could not be looked for: run sited as root or as a user in the `gpio` group (the package's udev rule gives that group the GPIO chips; the shipped unit runs sited with SupplementaryGroups=gpio)"
        );
    }

    #[test]
    fn a_readable_match_wins_over_an_unreadable_chip() {
        let found = chips(&[("/dev/gpiochip1", "pinctrl-bcm2711")]);
        let denied = [PathBuf::from("/dev/gpiochip0")];

        let path = select_chip(&found, &denied, DEFAULT_CHIP_LABELS).expect("found");

        assert_eq!(path, PathBuf::from("/dev/gpiochip1"));
    }

    #[test]
    fn the_chip_setting_is_a_label_unless_it_is_a_dev_path() {
        assert_eq!(
            chip_wanted(None),
            ChipWanted::Labels(DEFAULT_CHIP_LABELS.to_vec())
        );
        assert_eq!(
            chip_wanted(Some("gpio-sim.0-node0")),
            ChipWanted::Labels(vec!["gpio-sim.0-node0"])
        );
        assert_eq!(
            chip_wanted(Some("/dev/gpiochip4")),
            ChipWanted::Path(Path::new("/dev/gpiochip4"))
        );
    }

    #[test]
    fn a_second_sited_is_named_as_such() {
        assert!(describe_holder("sited").contains("second instance"));
    }

    #[test]
    fn errno_is_read_from_os_errors_only() {
        assert_eq!(errno_of(&os_error(libc::EACCES)), Some(libc::EACCES));
        assert_eq!(
            errno_of(&gpiocdev::Error::InvalidArgument("x".into())),
            None
        );
    }
}
