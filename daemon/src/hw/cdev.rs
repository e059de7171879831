//! The Linux GPIO character device (uAPI v2) through `gpiocdev`: any Linux board, the Pi 5
//! included, and the backend the gpio-sim VM tests run on. Each input is its own line request
//! whose fd sits in the mio loop, so an edge wakes the loop with no thread in between.
//!
//! Releasing a line (on reload or exit) is the kernel's business: upstream pinctrl drivers
//! return a freed line to input, Raspberry Pi kernels keep an output driven unless
//! `dtparam=strict_gpiod` is set. Either way the daemon has already driven outputs to their safe
//! levels, and hardware pull resistors are what keep them there if the process is killed.
//! There is no software PWM here: a PWM pin needs `pwm-chip` and `pwm-channel` (sysfs PWM).

use super::gpiochip::{self, CONSUMER, describe_holder, errno_of, is_permission_errno, to_io};
use super::pwm_sysfs::{SYSFS_PWM_ROOT, SysfsPwm};
use super::{Edge, EdgeSink, Error, Hardware, Pin};
use gpiocdev::line::{EdgeDetection, EdgeEvent, EdgeKind, EventClock, Value};
use gpiocdev::request::Builder;
use gpiocdev::{Chip, Request};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use site_plugin_api::{Bias, Level, PwmSpec};
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// Edges the kernel keeps per input until the loop reads them: room for a bouncing contact
/// while the loop is busy elsewhere (the kernel default for one line is 16).
const KERNEL_EDGE_BUFFER: u32 = 64;

/// Edges read per `read()` call while draining an input.
const EDGE_READ_BATCH: usize = 16;

enum Line {
    Input(Request),
    Output(Request),
    Pwm(SysfsPwm),
}

pub struct CdevBackend {
    /// Kept open to ask the kernel who holds a busy line.
    chip: Chip,
    /// The PWM chip and channels for servos that name none.
    pwm: super::PwmDefaults,
    label: String,
    num_lines: u32,
    lines: HashMap<Pin, Line>,
    sink: Option<(Registry, Token)>,
    /// Reused across `take_edges` calls so draining allocates nothing.
    event_buf: Vec<u64>,
}

impl CdevBackend {
    /// Opens the GPIO chip `chip` names: a label (as `gpiodetect` prints it) or, starting with
    /// "/dev/", a path. `None` looks for the Raspberry Pi controllers
    /// (`pinctrl-rp1`, `pinctrl-bcm2711`, `pinctrl-bcm2835`, in that order).
    pub fn open(chip: Option<&str>, pwm: super::PwmDefaults) -> Result<Self, Error> {
        let path = gpiochip::resolve(chip)?;
        let chip = gpiochip::open(&path)?;
        let info = chip.info().map_err(|e| {
            Error::io(
                format!("reading the chip info of {}", path.display()),
                to_io(e),
            )
        })?;
        log::info!(
            "hardware: cdev backend on {} (\"{}\", {} lines)",
            chip.path().display(),
            info.label,
            info.num_lines
        );
        Ok(CdevBackend {
            chip,
            pwm,
            label: info.label,
            num_lines: info.num_lines,
            lines: HashMap::new(),
            sink: None,
            event_buf: Vec::new(),
        })
    }

    /// Refuses a pin this backend already holds or the chip does not have.
    fn check_claimable(&self, pin: Pin) -> Result<(), Error> {
        if self.lines.contains_key(&pin) {
            return Err(Error::AlreadyClaimed { pin });
        }
        if pin >= self.num_lines {
            return Err(self.no_such_pin(pin));
        }
        Ok(())
    }

    fn no_such_pin(&self, pin: Pin) -> Error {
        Error::NoSuchPin {
            pin,
            chip: format!(
                "{} (\"{}\", lines 0-{})",
                self.chip.path().display(),
                self.label,
                self.num_lines.saturating_sub(1)
            ),
        }
    }

    /// Requests one line with consumer "sited"; `configure` sets direction, bias and edges.
    fn request(&self, pin: Pin, configure: impl FnOnce(&mut Builder)) -> Result<Request, Error> {
        let mut builder = Request::builder();
        builder
            .on_chip(self.chip.path())
            .with_consumer(CONSUMER)
            .with_line(pin);
        configure(&mut builder);
        builder.request().map_err(|e| {
            // gpiocdev keeps the errno of a failed ioctl to itself, so ask the kernel directly
            // whether someone holds the line.
            let holder = self
                .chip
                .line_info(pin)
                .ok()
                .filter(|info| info.used)
                .map(|info| info.consumer);
            claim_error(
                pin,
                errno_of(&e),
                holder,
                self.chip.path(),
                self.num_lines,
                e,
            )
        })
    }
}

impl Hardware for CdevBackend {
    fn name(&self) -> &'static str {
        "cdev"
    }

    fn attach(&mut self, sink: EdgeSink) -> Result<(), Error> {
        // Inputs claimed before attach (not the usual order) join the loop now.
        for line in self.lines.values() {
            if let Line::Input(req) = line {
                register(&sink.registry, sink.token, req)?;
            }
        }
        self.sink = Some((sink.registry, sink.token));
        Ok(())
    }

    fn claim_input(&mut self, pin: Pin, bias: Bias) -> Result<(), Error> {
        self.check_claimable(pin)?;
        let req = self.request(pin, |b| {
            b.as_input()
                .with_bias(cdev_bias(bias))
                .with_edge_detection(EdgeDetection::BothEdges)
                // The default for uAPI v2, said explicitly: Edge::at must be monotonic.
                .with_event_clock(EventClock::Monotonic)
                .with_kernel_event_buffer_size(KERNEL_EDGE_BUFFER);
        })?;
        if let Some((registry, token)) = &self.sink {
            register(registry, *token, &req)?;
        }
        self.lines.insert(pin, Line::Input(req));
        Ok(())
    }

    fn claim_output(&mut self, pin: Pin, initial: Level) -> Result<(), Error> {
        self.check_claimable(pin)?;
        // The kernel sets the value together with the direction, so the line never glitches.
        let req = self.request(pin, |b| {
            b.as_output(value_of(initial));
        })?;
        self.lines.insert(pin, Line::Output(req));
        Ok(())
    }

    fn claim_pwm(&mut self, pin: Pin, spec: PwmSpec) -> Result<(), Error> {
        if self.lines.contains_key(&pin) {
            return Err(Error::AlreadyClaimed { pin });
        }
        self.pwm.refresh();
        let Some(chip) = spec.chip.or(self.pwm.chip()) else {
            return Err(Error::NoPwmChip {
                pin,
                why: format!(
                    "{} (the cdev backend has no software PWM)",
                    self.pwm.missing().unwrap_or("none is known")
                ),
            });
        };
        let Some(channel) = spec.channel.or(self.pwm.channel_for(pin)) else {
            return Err(Error::PwmNotConfigured {
                pin,
                why: "no pwm-channel, and this pin has no channel on this board (the cdev backend has no software PWM)",
            });
        };
        if let Some(other) = self.lines.iter().find_map(|(p, line)| match line {
            Line::Pwm(pwm) if pwm.chip() == chip && pwm.channel() == channel => Some(*p),
            _ => None,
        }) {
            return Err(Error::Pwm {
                pin,
                chip,
                channel,
                detail: format!("this channel already drives GPIO {other}"),
            });
        }
        // The pin itself is muxed to PWM by the device tree, so no line is requested for it.
        let mut pwm = SysfsPwm::open(Path::new(SYSFS_PWM_ROOT), chip, channel, spec.period_ns)
            .map_err(|e| e.into_hw(pin, chip, channel))?;
        pwm.set_pulse(spec.safe_pulse_ns)
            .map_err(|e| e.into_hw(pin, chip, channel))?;
        self.lines.insert(pin, Line::Pwm(pwm));
        Ok(())
    }

    fn release(&mut self, pin: Pin) {
        if let (Some(Line::Input(req)), Some((registry, _))) = (self.lines.get(&pin), &self.sink) {
            let fd = req.as_raw_fd();
            if let Err(e) = registry.deregister(&mut SourceFd(&fd)) {
                // Closing the fd below removes it from epoll anyway.
                log::debug!("hardware: deregistering GPIO {pin}: {e}");
            }
        }
        self.lines.remove(&pin);
    }

    fn read(&mut self, pin: Pin) -> Result<Level, Error> {
        match self.lines.get(&pin) {
            Some(Line::Input(req)) | Some(Line::Output(req)) => req
                .lone_value()
                .map(level_of)
                .map_err(|e| Error::io(format!("reading GPIO {pin}"), to_io(e))),
            Some(Line::Pwm(_)) | None => Err(Error::NotClaimed {
                pin,
                what: "as an input",
            }),
        }
    }

    fn write(&mut self, pin: Pin, level: Level) -> Result<(), Error> {
        match self.lines.get(&pin) {
            Some(Line::Output(req)) => req
                .set_lone_value(value_of(level))
                .map_err(|e| Error::io(format!("writing GPIO {pin}"), to_io(e))),
            _ => Err(Error::NotClaimed {
                pin,
                what: "as an output",
            }),
        }
    }

    fn set_pwm(&mut self, pin: Pin, pulse_ns: u64) -> Result<(), Error> {
        match self.lines.get_mut(&pin) {
            Some(Line::Pwm(pwm)) => {
                let (chip, channel) = (pwm.chip(), pwm.channel());
                pwm.set_pulse(pulse_ns)
                    .map_err(|e| e.into_hw(pin, chip, channel))
            }
            _ => Err(Error::NotClaimed {
                pin,
                what: "for PWM",
            }),
        }
    }

    fn take_edges(&mut self, out: &mut Vec<Edge>) -> Result<(), Error> {
        let start = out.len();
        let mut first_error = None;
        // mio is edge-triggered: every input is drained, even after one of them fails.
        for (pin, line) in &self.lines {
            if let Line::Input(req) = line
                && let Err(e) = drain_edges(req, &mut self.event_buf, out)
            {
                first_error.get_or_insert_with(|| {
                    Error::io(format!("reading edges of GPIO {pin}"), to_io(e))
                });
            }
        }
        // Lines are drained one after another; the site logic wants them in the order they
        // happened.
        out[start..].sort_by_key(|edge| edge.at);
        first_error.map_or(Ok(()), Err)
    }
}

fn register(registry: &Registry, token: Token, req: &Request) -> Result<(), Error> {
    let fd = req.as_raw_fd();
    registry
        .register(&mut SourceFd(&fd), token, Interest::READABLE)
        .map_err(|e| Error::io("adding a GPIO line to the event loop", e))
}

/// Reads every edge the kernel has queued on `req` without blocking: a read happens only after
/// a zero-timeout poll says one is there, and this loop is the request's only reader.
fn drain_edges(req: &Request, buf: &mut Vec<u64>, out: &mut Vec<Edge>) -> gpiocdev::Result<()> {
    let event_words = req.edge_event_u64_size();
    buf.resize(event_words * EDGE_READ_BATCH, 0);
    while req.has_edge_event()? {
        let words = req.read_edge_events_into_slice(buf)?;
        if words == 0 {
            break;
        }
        for raw in buf[..words].chunks_exact(event_words) {
            out.push(edge_from_event(&req.edge_event_from_slice(raw)?));
        }
    }
    Ok(())
}

/// The kernel stamps edges on CLOCK_MONOTONIC (the event clock requested), the clock
/// [`crate::timers::monotonic_now`] reads, so the stamp is used as it is.
fn timestamp_from_kernel_ns(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

/// Lines are requested active-high, so a rising edge is a physical high.
fn edge_from_event(event: &EdgeEvent) -> Edge {
    Edge {
        pin: event.offset,
        level: match event.kind {
            EdgeKind::Rising => Level::High,
            EdgeKind::Falling => Level::Low,
        },
        at: timestamp_from_kernel_ns(event.timestamp_ns),
    }
}

fn value_of(level: Level) -> Value {
    match level {
        Level::High => Value::Active,
        Level::Low => Value::Inactive,
    }
}

fn level_of(value: Value) -> Level {
    match value {
        Value::Active => Level::High,
        Value::Inactive => Level::Low,
    }
}

fn cdev_bias(bias: Bias) -> gpiocdev::line::Bias {
    match bias {
        Bias::Off => gpiocdev::line::Bias::Disabled,
        Bias::PullUp => gpiocdev::line::Bias::PullUp,
        Bias::PullDown => gpiocdev::line::Bias::PullDown,
    }
}

/// What a failed line request means for the site owner. `errno` is known when the failure was
/// a plain system call (opening the chip); `holder` is the consumer the kernel reports when the
/// line is in use.
fn claim_error(
    pin: Pin,
    errno: Option<i32>,
    holder: Option<String>,
    chip_path: &Path,
    num_lines: u32,
    cause: gpiocdev::Error,
) -> Error {
    if is_permission_errno(errno) {
        return Error::PermissionDenied {
            path: chip_path.display().to_string(),
        };
    }
    if holder.is_some() || errno == Some(libc::EBUSY) {
        return Error::PinBusy {
            pin,
            holder: describe_holder(holder.as_deref().unwrap_or("")),
        };
    }
    if pin >= num_lines {
        return Error::NoSuchPin {
            pin,
            chip: format!(
                "{} (lines 0-{})",
                chip_path.display(),
                num_lines.saturating_sub(1)
            ),
        };
    }
    let source = match errno {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => to_io(cause),
    };
    Error::io(
        format!("claiming GPIO {pin} on {}", chip_path.display()),
        source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(errno: i32) -> gpiocdev::Error {
        gpiocdev::Error::from(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn ebusy_names_the_holder() {
        let err = claim_error(
            17,
            Some(libc::EBUSY),
            Some("gpioset".into()),
            Path::new("/dev/gpiochip0"),
            54,
            os_error(libc::EBUSY),
        );

        assert!(
            matches!(&err, Error::PinBusy { pin: 17, holder } if holder == "\"gpioset\" holds it"),
            "{err:?}"
        );
    }

    #[test]
    fn a_used_line_is_busy_even_when_the_errno_is_hidden() {
        let err = claim_error(
            17,
            None,
            Some(String::new()),
            Path::new("/dev/gpiochip0"),
            54,
            gpiocdev::Error::InvalidArgument("hidden".into()),
        );

        assert!(
            matches!(&err, Error::PinBusy { holder, .. } if holder.contains("another program")),
            "{err:?}"
        );
    }

    #[test]
    fn eacces_and_eperm_name_the_chip_device() {
        for errno in [libc::EACCES, libc::EPERM] {
            let err = claim_error(
                17,
                Some(errno),
                None,
                Path::new("/dev/gpiochip0"),
                54,
                os_error(errno),
            );

            assert!(
                matches!(&err, Error::PermissionDenied { path } if path == "/dev/gpiochip0"),
                "{err:?}"
            );
            assert!(err.to_string().contains("gpio"));
        }
    }

    #[test]
    fn an_offset_beyond_the_chip_is_no_such_pin() {
        let err = claim_error(
            60,
            None,
            None,
            Path::new("/dev/gpiochip0"),
            54,
            gpiocdev::Error::InvalidArgument("hidden".into()),
        );

        assert!(matches!(err, Error::NoSuchPin { pin: 60, .. }), "{err:?}");
        assert!(err.to_string().contains("lines 0-53"));
    }

    #[test]
    fn other_errnos_keep_the_os_error() {
        let err = claim_error(
            17,
            Some(libc::EIO),
            None,
            Path::new("/dev/gpiochip0"),
            54,
            os_error(libc::EIO),
        );

        assert!(
            matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
            "{err:?}"
        );
    }

    #[test]
    fn kernel_nanoseconds_become_a_duration() {
        assert_eq!(
            timestamp_from_kernel_ns(12_500_000_123),
            Duration::new(12, 500_000_123)
        );
    }

    #[test]
    fn rising_and_falling_events_become_high_and_low_edges() {
        let mut event = EdgeEvent {
            timestamp_ns: 3_000_000_007,
            kind: EdgeKind::Rising,
            offset: 22,
            seqno: 1,
            line_seqno: 1,
        };

        assert_eq!(
            edge_from_event(&event),
            Edge {
                pin: 22,
                level: Level::High,
                at: Duration::new(3, 7)
            }
        );
        event.kind = EdgeKind::Falling;
        assert_eq!(edge_from_event(&event).level, Level::Low);
    }

    #[test]
    fn levels_and_values_round_trip() {
        for level in [Level::Low, Level::High] {
            assert_eq!(level_of(value_of(level)), level);
        }
    }

    #[test]
    fn a_label_no_chip_carries_is_a_clear_error_not_a_panic() {
        let result = CdevBackend::open(Some("sited-test-no-such-chip"), Default::default());

        assert!(
            matches!(
                &result,
                Err(Error::NoChips)
                    | Err(Error::PermissionDenied { .. })
                    | Err(Error::ChipNotFound { .. })
            ),
            "{:?}",
            result.as_ref().err()
        );
    }

    #[test]
    fn a_missing_chip_path_is_chip_not_found() {
        let result =
            CdevBackend::open(Some("/dev/gpiochip-sited-test-missing"), Default::default());

        assert!(
            matches!(&result, Err(Error::ChipNotFound { label, .. }) if label.contains("gpiochip-sited-test-missing")),
            "{:?}",
            result.as_ref().err()
        );
    }

    #[test]
    fn open_without_gpio_chips_says_there_are_none() {
        let machine_has_chips = std::fs::read_dir("/dev")
            .expect("/dev")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("gpiochip"));

        let result = CdevBackend::open(None, Default::default());

        if machine_has_chips {
            // A Pi opens; a VM with gpio-sim lists its chips; neither panics.
            assert!(
                matches!(
                    &result,
                    Ok(_) | Err(Error::ChipNotFound { .. }) | Err(Error::PermissionDenied { .. })
                ),
                "{:?}",
                result.as_ref().err()
            );
        } else {
            assert!(
                matches!(&result, Err(Error::NoChips)),
                "{:?}",
                result.as_ref().err()
            );
        }
    }
}
