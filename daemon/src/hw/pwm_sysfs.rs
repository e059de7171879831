//! Hardware PWM through the kernel's sysfs PWM interface (`/sys/class/pwm`). A servo needs a
//! steady pulse that software PWM cannot give on a busy Pi; the PWM block makes it with no CPU.
//! The rppal and cdev backends use this for every PWM pin that has a chip and channel.
//!
//! Dropping a [`SysfsPwm`] leaves the channel exported and running: hardware PWM keeps sending
//! the last pulse after the daemon exits, which is what holds a servo-driven door closed once
//! the shutdown path has set the safe pulse.

use super::{Error, Pin};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel publishes PWM chips.
pub const SYSFS_PWM_ROOT: &str = "/sys/class/pwm";

/// How long udev may take, after an export, to hand a new channel's files to the gpio group.
/// Only claims (startup and reload) wait for this, never the event loop.
const EXPORT_SETTLE_MAX_MS: u64 = 5_000;
const EXPORT_SETTLE_STEP_MS: u64 = 10;

/// Why a PWM channel could not be opened or driven. [`PwmError::into_hw`] turns it into the
/// daemon's [`Error`] once the caller knows which GPIO it was for.
#[derive(Debug)]
pub enum PwmError {
    /// `pwmchipN` does not exist: no PWM overlay, or the wrong chip number.
    NoChip {
        path: PathBuf,
    },
    /// The chip has fewer channels than asked for.
    NoChannel {
        path: PathBuf,
        npwm: u32,
    },
    PermissionDenied {
        path: PathBuf,
    },
    /// `export` said EBUSY and no channel appeared: a kernel driver holds it (the Pi 5's fan
    /// holds a channel of `pwmchip0` on 6.6 kernels). `holder` is who, as far as we can tell.
    InUse {
        export: PathBuf,
        holder: Option<Holder>,
    },
    ZeroPeriod,
    PulseTooLong {
        pulse_ns: u64,
        period_ns: u64,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl PwmError {
    pub fn into_hw(self, pin: Pin, chip: u32, channel: u32) -> Error {
        let pwm = |detail: String| Error::Pwm {
            pin,
            chip,
            channel,
            detail,
        };
        match self {
            PwmError::NoChip { path } => pwm(format!(
                "{} does not exist: enable PWM (e.g. `dtoverlay=pwm-2chan` in /boot/firmware/config.txt, then reboot) or set pwm-chip to a chip listed in {SYSFS_PWM_ROOT}",
                path.display()
            )),
            PwmError::NoChannel { path, npwm } => pwm(format!(
                "{} has only {npwm} channel(s); set pwm-channel below {npwm}",
                path.display()
            )),
            PwmError::PermissionDenied { path } => Error::PermissionDenied {
                path: path.display().to_string(),
            },
            PwmError::InUse { export, holder } => pwm(format!(
                "channel in use by a kernel driver ({}; writing {channel} to {} says EBUSY); free it (a device-tree overlay such as the Pi 5's fan may hold it) or pick another pwm-chip/pwm-channel",
                match holder {
                    Some(Holder::Label(label)) => format!("\"{label}\""),
                    Some(Holder::ChipConsumers(devices)) => format!(
                        "the chip's kernel consumers: {}; /sys/kernel/debug/pwm, readable by root, names the channel's",
                        devices.join(", ")
                    ),
                    None => "see /sys/kernel/debug/pwm".into(),
                },
                export.display()
            )),
            PwmError::ZeroPeriod => pwm(
                "the period is 0 ns; set the device's PWM period (20 ms for hobby servos)".into(),
            ),
            PwmError::PulseTooLong {
                pulse_ns,
                period_ns,
            } => Error::PulseTooLong {
                pin,
                pulse_ns,
                period_ns,
            },
            PwmError::Io { path, source } => pwm(format!("{}: {source}", path.display())),
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            PwmError::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            PwmError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Who holds a PWM channel that `export` refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The label the holder requested the channel with, from debugfs (`"pwm-fan"`).
    Label(String),
    /// Debugfs is root-only (sited runs as its own user) or not mounted: the kernel devices
    /// linked to the chip as its consumers (`platform:cooling_fan`), one of which holds it.
    ChipConsumers(Vec<String>),
}

/// Who holds `channel` of the chip at `chip_dir`: first from the PWM core's debugfs listing
/// (`/sys/kernel/debug/pwm`, readable by root where debugfs is mounted; 6.1 kernels leave out
/// the `0: ` numbering):
/// ```text
/// 0: platform/sited-test-pwm.0, 4 PWM devices
///  pwm-1   (test-fan            ): requested period: 0 ns duty: 0 ns polarity: normal
/// ```
/// then from the device links the PWM core makes from a consumer found through the device tree
/// (pwm-fan's) to the chip's device: world-readable `consumer:<bus>:<device>` entries there.
fn kernel_holder(chip_dir: &Path, channel: u32) -> Option<Holder> {
    let device_dir = std::fs::canonicalize(chip_dir.join("device")).ok()?;
    let device = device_dir.file_name()?.to_str()?.to_string();
    if let Ok(listing) = std::fs::read_to_string("/sys/kernel/debug/pwm")
        && let Some(label) = holder_in_listing(&listing, &device, channel)
    {
        return Some(Holder::Label(label));
    }
    let consumers = chip_consumers(&device_dir);
    (!consumers.is_empty()).then_some(Holder::ChipConsumers(consumers))
}

/// The chip device's consumers, from its `consumer:<bus>:<device>` links, sorted.
fn chip_consumers(device_dir: &Path) -> Vec<String> {
    let mut consumers: Vec<String> = std::fs::read_dir(device_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            name.to_str()?.strip_prefix("consumer:").map(str::to_string)
        })
        .collect();
    consumers.sort();
    consumers
}

fn holder_in_listing(listing: &str, device: &str, channel: u32) -> Option<String> {
    let mut in_chip = false;
    for line in listing.lines() {
        if !line.starts_with(' ') {
            // `platform/sited-test-pwm.0, 4 PWM devices`, numbered `0: ...` on newer kernels.
            let bus_path = line.split(',').next().unwrap_or_default();
            let bus_path = bus_path.split_once(": ").map_or(bus_path, |(_, p)| p);
            in_chip = bus_path.ends_with(&format!("/{device}"));
            continue;
        }
        let entry = line.trim_start();
        if in_chip && let Some(rest) = entry.strip_prefix(&format!("pwm-{channel} ")) {
            let label = rest
                .trim_start()
                .strip_prefix('(')?
                .split(')')
                .next()?
                .trim();
            return (!label.is_empty()).then(|| label.to_string());
        }
    }
    None
}

/// One exported PWM channel, configured with a fixed period and normal polarity.
#[derive(Debug)]
pub struct SysfsPwm {
    chip: u32,
    channel: u32,
    dir: PathBuf,
    period_ns: u64,
}

impl SysfsPwm {
    /// Exports `pwmchip<chip>/pwm<channel>` under `root` if needed, waits (bounded) for udev to
    /// make it writable, and sets its period and normal polarity. A channel that is already
    /// running keeps its pulse until [`SysfsPwm::set_pulse`], so a door held closed across a
    /// restart does not twitch. `root` is [`SYSFS_PWM_ROOT`] except in tests.
    pub fn open(root: &Path, chip: u32, channel: u32, period_ns: u64) -> Result<Self, PwmError> {
        Self::open_with_settle(
            root,
            chip,
            channel,
            period_ns,
            Duration::from_millis(EXPORT_SETTLE_MAX_MS),
        )
    }

    fn open_with_settle(
        root: &Path,
        chip: u32,
        channel: u32,
        period_ns: u64,
        settle: Duration,
    ) -> Result<Self, PwmError> {
        if period_ns == 0 {
            return Err(PwmError::ZeroPeriod);
        }
        let chip_dir = root.join(format!("pwmchip{chip}"));
        if !chip_dir.is_dir() {
            return Err(PwmError::NoChip { path: chip_dir });
        }
        // `npwm` is absent only on fakes; the export below would fail with EINVAL anyway.
        if let Ok(npwm) = read_u64(&chip_dir.join("npwm")) {
            let npwm = u32::try_from(npwm).unwrap_or(u32::MAX);
            if channel >= npwm {
                return Err(PwmError::NoChannel {
                    path: chip_dir,
                    npwm,
                });
            }
        }
        let dir = chip_dir.join(format!("pwm{channel}"));
        if !dir.is_dir() {
            let export = chip_dir.join("export");
            match write_attr(&export, &channel.to_string()) {
                Ok(()) => {}
                // Someone exported it between our look and our write: just as good. Without
                // the channel's directory, though, a kernel driver holds it.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if !dir.is_dir() {
                        return Err(PwmError::InUse {
                            holder: kernel_holder(&chip_dir, channel),
                            export,
                        });
                    }
                }
                Err(e) => return Err(PwmError::io(&export, e)),
            }
        }
        let attrs = ["period", "duty_cycle", "enable"].map(|a| dir.join(a));
        for attr in &attrs {
            retry_while_settling(settle, Duration::from_millis(EXPORT_SETTLE_STEP_MS), || {
                OpenOptions::new().write(true).open(attr).map(drop)
            })
            .map_err(|e| PwmError::io(attr, e))?;
        }
        let pwm = SysfsPwm {
            chip,
            channel,
            dir,
            period_ns,
        };
        // Period first: the kernel refuses every other change while the period is 0, as it
        // is on a freshly exported channel.
        let current_duty = pwm.read("duty_cycle")?;
        for (attr, value) in period_writes(current_duty, period_ns) {
            pwm.write(attr, value)?;
        }
        pwm.set_normal_polarity()?;
        Ok(pwm)
    }

    pub fn chip(&self) -> u32 {
        self.chip
    }

    pub fn channel(&self) -> u32 {
        self.channel
    }

    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Sends pulses of `pulse_ns` every period; 0 disables the channel (stops pulsing).
    pub fn set_pulse(&mut self, pulse_ns: u64) -> Result<(), PwmError> {
        for (attr, value) in pulse_writes(pulse_ns, self.period_ns)? {
            self.write(attr, value)?;
        }
        Ok(())
    }

    /// Inversed polarity would turn a "closed" pulse into its complement. Most drivers refuse
    /// a polarity change while enabled, so disable first; only when it is wrong.
    fn set_normal_polarity(&self) -> Result<(), PwmError> {
        let path = self.dir.join("polarity");
        let polarity = match std::fs::read_to_string(&path) {
            Ok(p) => p,
            // Drivers without polarity support do not have the file: normal is all they do.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PwmError::io(&path, e)),
        };
        if polarity.trim() != "normal" {
            self.write("enable", 0)?;
            write_attr(&path, "normal").map_err(|e| PwmError::io(&path, e))?;
        }
        Ok(())
    }

    fn read(&self, attr: &str) -> Result<u64, PwmError> {
        let path = self.dir.join(attr);
        read_u64(&path).map_err(|e| PwmError::io(&path, e))
    }

    fn write(&self, attr: &str, value: u64) -> Result<(), PwmError> {
        let path = self.dir.join(attr);
        write_attr(&path, &value.to_string()).map_err(|e| PwmError::io(&path, e))
    }
}

/// The writes that set a new period. The kernel rejects any state where duty_cycle exceeds
/// period, so a duty left over from an earlier, longer period is zeroed first.
fn period_writes(current_duty_ns: u64, period_ns: u64) -> Vec<(&'static str, u64)> {
    let mut writes = Vec::with_capacity(2);
    if current_duty_ns > period_ns {
        writes.push(("duty_cycle", 0));
    }
    writes.push(("period", period_ns));
    writes
}

/// The writes that start (duty, then enable) or stop (disable) pulsing. The period is fixed at
/// open, so a duty within it is always accepted.
fn pulse_writes(pulse_ns: u64, period_ns: u64) -> Result<Vec<(&'static str, u64)>, PwmError> {
    if pulse_ns == 0 {
        return Ok(vec![("enable", 0)]);
    }
    if pulse_ns > period_ns {
        return Err(PwmError::PulseTooLong {
            pulse_ns,
            period_ns,
        });
    }
    Ok(vec![("duty_cycle", pulse_ns), ("enable", 1)])
}

/// Runs `attempt` until it succeeds, fails with anything but "not found"/"permission denied"
/// (what a channel looks like while udev is still setting it up), or `max` has passed.
fn retry_while_settling<T>(
    max: Duration,
    step: Duration,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let deadline = Instant::now() + max;
    loop {
        match attempt() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(step);
            }
            result => return result,
        }
    }
}

/// A sysfs attribute takes one whole value per write; truncating keeps a regular file (in
/// tests) holding exactly the last value, as sysfs shows it.
fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected a number, found {:?}: {e}", text.trim()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const SERVO_PERIOD_NS: u64 = 20_000_000;

    #[test]
    fn the_kernel_driver_holding_a_channel_is_named_from_debugfs() {
        let listing = [
            "0: platform/soc/fe20c000.pwm, 2 PWM devices",
            " pwm-1   (other               ): requested",
            "platform/sited-test-pwm.0, 4 PWM devices",
            " pwm-0   (sysfs               ): requested enabled",
            " pwm-1   (test-fan            ): requested period: 0 ns duty: 0 ns polarity: normal",
        ]
        .join("\n");
        let listing = listing.as_str();
        assert_eq!(
            holder_in_listing(listing, "sited-test-pwm.0", 1).as_deref(),
            Some("test-fan")
        );
        assert_eq!(holder_in_listing(listing, "sited-test-pwm.0", 2), None);
        assert_eq!(
            holder_in_listing(listing, "fe20c000.pwm", 1).as_deref(),
            Some("other")
        );
        let e = PwmError::InUse {
            export: "/sys/class/pwm/pwmchip0/export".into(),
            holder: Some(Holder::Label("test-fan".into())),
        }
        .into_hw(13, 0, 1);
        assert_eq!(
            e.to_string(),
            "PWM 0/1 for GPIO 13: channel in use by a kernel driver (\"test-fan\"; writing 1 to /sys/class/pwm/pwmchip0/export says EBUSY); free it (a device-tree overlay such as the Pi 5's fan may hold it) or pick another pwm-chip/pwm-channel"
        );
    }

    #[test]
    fn without_debugfs_the_chips_kernel_consumers_are_named() {
        let root = tempfile::tempdir().expect("temp dir");
        let device = root.path().join("sited-test-pwm.1");
        let chip_dir = device.join("pwm/pwmchip4");
        fs::create_dir_all(&chip_dir).expect("chip dir");
        std::os::unix::fs::symlink(&device, chip_dir.join("device")).expect("device link");
        for (name, target) in [
            (
                "consumer:platform:sited-test-fan",
                "../../virtual/devlink/x",
            ),
            ("consumer:platform:another-fan", "../../virtual/devlink/y"),
            ("supplier:platform:clock", "../../virtual/devlink/z"),
        ] {
            std::os::unix::fs::symlink(target, device.join(name)).expect("link");
        }

        let consumers = chip_consumers(&device);
        assert_eq!(
            consumers,
            ["platform:another-fan", "platform:sited-test-fan"],
            "only consumers, sorted"
        );
        let e = PwmError::InUse {
            export: chip_dir.join("export"),
            holder: Some(Holder::ChipConsumers(consumers)),
        }
        .into_hw(13, 4, 1);
        assert!(
            e.to_string().contains(
                "channel in use by a kernel driver (the chip's kernel consumers: platform:another-fan, platform:sited-test-fan; /sys/kernel/debug/pwm, readable by root, names the channel's; writing 1 to "
            ),
            "{e}"
        );
        assert!(chip_consumers(&root.path().join("gone")).is_empty());
    }

    /// A sysfs PWM tree in a temp dir: `pwmchip<chip>` with `npwm` and `export`, and (when
    /// `exported`) `pwm<channel>` with its attributes as a fresh kernel export shows them.
    fn fake_pwm_root(chip: u32, channel: u32, exported: bool) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let chip_dir = root.path().join(format!("pwmchip{chip}"));
        fs::create_dir_all(&chip_dir).expect("chip dir");
        fs::write(chip_dir.join("npwm"), "2\n").expect("npwm");
        fs::write(chip_dir.join("export"), "").expect("export");
        if exported {
            let dir = chip_dir.join(format!("pwm{channel}"));
            fs::create_dir(&dir).expect("channel dir");
            for (attr, value) in [
                ("period", "0\n"),
                ("duty_cycle", "0\n"),
                ("enable", "0\n"),
                ("polarity", "normal\n"),
            ] {
                fs::write(dir.join(attr), value).expect("attr");
            }
        }
        root
    }

    fn attr(root: &Path, chip: u32, channel: u32, name: &str) -> String {
        fs::read_to_string(root.join(format!("pwmchip{chip}/pwm{channel}")).join(name))
            .expect("read attr")
            .trim()
            .to_string()
    }

    #[test]
    fn open_sets_the_period_and_leaves_the_channel_disabled() {
        let root = fake_pwm_root(0, 1, true);

        let pwm = SysfsPwm::open(root.path(), 0, 1, SERVO_PERIOD_NS).expect("open");

        assert_eq!(pwm.period_ns(), SERVO_PERIOD_NS);
        assert_eq!(attr(root.path(), 0, 1, "period"), "20000000");
        assert_eq!(attr(root.path(), 0, 1, "enable"), "0");
    }

    #[test]
    fn a_pulse_sets_duty_and_enables_and_zero_disables() {
        let root = fake_pwm_root(0, 0, true);
        let mut pwm = SysfsPwm::open(root.path(), 0, 0, SERVO_PERIOD_NS).expect("open");

        pwm.set_pulse(1_500_000).expect("pulse");
        assert_eq!(attr(root.path(), 0, 0, "duty_cycle"), "1500000");
        assert_eq!(attr(root.path(), 0, 0, "enable"), "1");

        pwm.set_pulse(0).expect("stop");
        assert_eq!(attr(root.path(), 0, 0, "enable"), "0");
    }

    #[test]
    fn a_pulse_longer_than_the_period_is_refused_and_nothing_is_written() {
        let root = fake_pwm_root(0, 0, true);
        let mut pwm = SysfsPwm::open(root.path(), 0, 0, SERVO_PERIOD_NS).expect("open");

        let err = pwm.set_pulse(SERVO_PERIOD_NS + 1).expect_err("too long");

        assert!(matches!(err, PwmError::PulseTooLong { .. }));
        assert_eq!(attr(root.path(), 0, 0, "duty_cycle"), "0");
        assert_eq!(attr(root.path(), 0, 0, "enable"), "0");
    }

    #[test]
    fn a_leftover_duty_longer_than_the_new_period_is_zeroed_first() {
        assert_eq!(
            period_writes(25_000_000, SERVO_PERIOD_NS),
            vec![("duty_cycle", 0), ("period", SERVO_PERIOD_NS)]
        );
        assert_eq!(
            period_writes(1_500_000, SERVO_PERIOD_NS),
            vec![("period", SERVO_PERIOD_NS)]
        );
    }

    #[test]
    fn duty_is_written_before_enable() {
        assert_eq!(
            pulse_writes(1_000_000, SERVO_PERIOD_NS).expect("fits"),
            vec![("duty_cycle", 1_000_000), ("enable", 1)]
        );
        assert_eq!(
            pulse_writes(0, SERVO_PERIOD_NS).expect("stop"),
            vec![("enable", 0)]
        );
    }

    #[test]
    fn inversed_polarity_is_set_back_to_normal() {
        let root = fake_pwm_root(0, 0, true);
        fs::write(root.path().join("pwmchip0/pwm0/polarity"), "inversed\n").expect("polarity");

        SysfsPwm::open(root.path(), 0, 0, SERVO_PERIOD_NS).expect("open");

        assert_eq!(attr(root.path(), 0, 0, "polarity"), "normal");
    }

    #[test]
    fn a_missing_channel_is_exported_and_a_channel_that_never_appears_fails() {
        let root = fake_pwm_root(0, 1, false);

        let err = SysfsPwm::open_with_settle(root.path(), 0, 1, SERVO_PERIOD_NS, Duration::ZERO)
            .expect_err("the fake never creates pwm1");

        assert_eq!(
            fs::read_to_string(root.path().join("pwmchip0/export")).expect("export"),
            "1"
        );
        assert!(matches!(err, PwmError::Io { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_chip_names_the_overlay() {
        let root = tempfile::tempdir().expect("temp dir");

        let err = SysfsPwm::open(root.path(), 0, 0, SERVO_PERIOD_NS).expect_err("no chip");

        let msg = err.into_hw(18, 0, 0).to_string();
        assert!(msg.contains("pwmchip0 does not exist"), "{msg}");
        assert!(msg.contains("dtoverlay"), "{msg}");
    }

    #[test]
    fn a_channel_beyond_npwm_is_refused() {
        let root = fake_pwm_root(0, 0, true);

        let err = SysfsPwm::open(root.path(), 0, 2, SERVO_PERIOD_NS).expect_err("npwm is 2");

        assert!(
            matches!(err, PwmError::NoChannel { npwm: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn settling_retries_permission_denied_until_it_clears() {
        let mut attempts = 0;

        let result = retry_while_settling(Duration::from_secs(5), Duration::ZERO, || {
            attempts += 1;
            if attempts < 3 {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            } else {
                Ok(attempts)
            }
        });

        assert_eq!(result.expect("third attempt succeeds"), 3);
    }

    #[test]
    fn settling_gives_up_at_once_on_other_errors() {
        let mut attempts = 0;

        let result: io::Result<()> =
            retry_while_settling(Duration::from_secs(5), Duration::ZERO, || {
                attempts += 1;
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            });

        assert!(result.is_err());
        assert_eq!(attempts, 1);
    }

    #[test]
    fn settling_stops_at_the_deadline() {
        let mut attempts = 0;

        let result: io::Result<()> = retry_while_settling(Duration::ZERO, Duration::ZERO, || {
            attempts += 1;
            Err(io::Error::from(io::ErrorKind::NotFound))
        });

        assert_eq!(
            result.expect_err("never settles").kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(attempts, 1);
    }
}
