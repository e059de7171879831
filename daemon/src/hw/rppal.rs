//! The Raspberry Pi backend through `rppal` (the maintained `rpi-pal` crate): pins are read and
//! written through /dev/gpiomem, and edges arrive on rppal's interrupt thread, which queues
//! them on a channel and wakes the loop through the one `mio::Waker` (DESIGN.md §3).
//!
//! Pins are claimed with rppal's `reset_on_drop` off. The daemon drives every output to its
//! safe level at orderly shutdown; with the reset on, rppal would then switch the pin back to
//! its previous mode (usually input) and the safe level would hold only if the installer fitted
//! a pull resistor. With it off the pin keeps driving the safe level after exit, and a released
//! pin keeps its last level, as the `Hardware` trait promises. A released input stays an input
//! with its pull rather than returning to whatever mode it had before (possibly an output).
//!
//! rppal writes registers, not line requests, so the kernel does not know sited owns an output:
//! claims therefore check the GPIO chip's line info and refuse a line another program holds
//! (a program that comes later is not stopped; the cdev backend holds its lines exclusively).
//! Should rppal's interrupt thread fail to read an event it ends quietly and that input goes
//! deaf until it is claimed again; rppal gives no way to notice.

use super::gpiochip::{self, describe_holder};
use super::pwm_chips::PiPwm;
use super::pwm_sysfs::{PwmError, SYSFS_PWM_ROOT, SysfsPwm};
use super::{Edge, EdgeSink, Error, Hardware, Pin};
use crate::timers::monotonic_now;
use rppal::gpio::{self, Event, Gpio, InputPin, Mode, OutputPin, Trigger};
use site_plugin_api::{Bias, Level, PwmSpec};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

enum Claimed {
    Input {
        pin: InputPin,
        /// Tells this claim's queued edges from those of an earlier claim of the same pin.
        claim: u64,
    },
    Output(OutputPin),
    /// rppal's PWM thread starts with the first non-zero pulse, so a servo parked at 0 costs
    /// nothing; once started it runs (at 0, low) until release, since stopping it would block
    /// the loop for up to one period.
    SoftPwm {
        pin: OutputPin,
        period: Duration,
        running: bool,
    },
    HardPwm(SysfsPwm),
}

pub struct RppalBackend {
    /// Keeps rppal's shared GPIO state (the /dev/gpiomem mapping) alive.
    gpio: Gpio,
    /// The PWM chip (by its device) and the pin-to-channel routing of this Pi.
    pwm: super::PwmDefaults,
    pins: HashMap<Pin, Claimed>,
    edges: EdgeQueue,
    /// The Pi's GPIO chip, for asking the kernel who holds a line; `None` if it cannot be read.
    line_chip: Option<gpiocdev::Chip>,
    soft_pwm_warned: bool,
}

impl RppalBackend {
    /// Opens the Pi's GPIO; `board` is what detection read, named if rppal cannot tell the
    /// model either.
    pub fn open(board: &super::board::Board, pwm: super::PwmDefaults) -> Result<Self, Error> {
        let gpio = Gpio::new().map_err(|e| match e {
            gpio::Error::UnknownModel => Error::NotAPi {
                detail: format!("rppal cannot identify the board; read {}", board.evidence()),
            },
            e => map_gpio_error(e, None, None),
        })?;
        let line_chip = gpiochip::open_pi_chip_for_line_info();
        if line_chip.is_none() {
            log::warn!(
                "hardware: cannot read the GPIO chip's line info, so pins another program holds will not be detected"
            );
        }
        Ok(RppalBackend {
            gpio,
            pwm,
            pins: HashMap::new(),
            edges: EdgeQueue::new(),
            line_chip,
            soft_pwm_warned: false,
        })
    }

    /// Who holds `pin`, if the kernel says someone does.
    fn holder_of(&self, pin: Pin) -> Option<String> {
        let info = self.line_chip.as_ref()?.line_info(pin).ok()?;
        info.used.then(|| describe_holder(&info.consumer))
    }

    /// Takes `pin` from rppal after checking that neither sited nor another program holds it.
    fn take(&self, pin: Pin) -> Result<gpio::Pin, Error> {
        if self.pins.contains_key(&pin) {
            return Err(Error::AlreadyClaimed { pin });
        }
        let bcm = u8::try_from(pin).map_err(|_| Error::NoSuchPin {
            pin,
            chip: "this Raspberry Pi".into(),
        })?;
        if let Some(holder) = self.holder_of(pin) {
            return Err(Error::PinBusy { pin, holder });
        }
        self.gpio
            .get(bcm)
            .map_err(|e| map_gpio_error(e, Some(pin), None))
    }

    fn claim_hardware_pwm(
        &self,
        pin: Pin,
        chip: u32,
        channel: u32,
        spec: &PwmSpec,
    ) -> Result<SysfsPwm, HardPwmError> {
        if let Some(other) = self.pins.iter().find_map(|(p, claimed)| match claimed {
            Claimed::HardPwm(pwm) if pwm.chip() == chip && pwm.channel() == channel => Some(*p),
            _ => None,
        }) {
            return Err(HardPwmError::Failed(Error::Pwm {
                pin,
                chip,
                channel,
                detail: format!("this channel already drives GPIO {other}"),
            }));
        }
        // The Pi's PWM reaches the pin only if an overlay (or `pinctrl`) switched the pin to its
        // PWM function; an enabled channel on an unswitched pin would pulse some other pin, or
        // none, and the door would not move with no error anywhere.
        if let Some(pi) = self.pwm.pi
            && self.pwm.default_for(pin) == Some((chip, channel))
            && let Some(wanted) = pi_pwm_mode(pi, pin)
            && let Ok(bcm) = u8::try_from(pin)
            && let Ok(mode) = self.gpio.get(bcm).map(|p| p.mode())
            && mode != wanted
        {
            return Err(HardPwmError::NotSetUp(Error::Pwm {
                pin,
                chip,
                channel,
                detail: not_switched_to_pwm(pi, pin, mode),
            }));
        }
        let fail = |e: PwmError| {
            let not_set_up = matches!(e, PwmError::NoChip { .. } | PwmError::NoChannel { .. });
            let e = e.into_hw(pin, chip, channel);
            if not_set_up {
                HardPwmError::NotSetUp(e)
            } else {
                HardPwmError::Failed(e)
            }
        };
        let mut pwm = SysfsPwm::open(Path::new(SYSFS_PWM_ROOT), chip, channel, spec.period_ns)
            .map_err(fail)?;
        pwm.set_pulse(spec.safe_pulse_ns).map_err(fail)?;
        Ok(pwm)
    }

    fn claim_software_pwm(&mut self, pin: Pin, spec: &PwmSpec) -> Result<Claimed, Error> {
        if !self.soft_pwm_warned {
            log::warn!(
                "hardware: GPIO {pin} uses software PWM, which jitters when the Pi is busy (a servo twitches); hardware PWM is on GPIO 12, 13, 18 and 19"
            );
            self.soft_pwm_warned = true;
        }
        let mut out = self.take(pin)?.into_output_low();
        out.set_reset_on_drop(false);
        let period = Duration::from_nanos(spec.period_ns);
        let mut running = false;
        set_soft_pulse(pin, &mut out, period, &mut running, spec.safe_pulse_ns)?;
        Ok(Claimed::SoftPwm {
            pin: out,
            period,
            running,
        })
    }
}

enum HardPwmError {
    /// Hardware PWM is not set up for this pin (no overlay, no chip): software PWM may stand in
    /// when nobody asked for hardware PWM explicitly.
    NotSetUp(Error),
    Failed(Error),
}

impl Hardware for RppalBackend {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn attach(&mut self, sink: EdgeSink) -> Result<(), Error> {
        self.edges.set_waker(sink.waker);
        Ok(())
    }

    fn claim_input(&mut self, pin: Pin, bias: Bias) -> Result<(), Error> {
        let raw = self.take(pin)?;
        let mut input = match bias {
            Bias::Off => raw.into_input(),
            Bias::PullUp => raw.into_input_pullup(),
            Bias::PullDown => raw.into_input_pulldown(),
        };
        let (claim, on_edge) = self.edges.sender_for(pin);
        input
            .set_async_interrupt(Trigger::Both, None, on_edge)
            .map_err(|e| map_gpio_error(e, Some(pin), self.holder_of(pin)))?;
        // Only now: a failed claim drops the pin with rppal's reset, restoring it as it was.
        input.set_reset_on_drop(false);
        self.pins.insert(pin, Claimed::Input { pin: input, claim });
        Ok(())
    }

    fn claim_output(&mut self, pin: Pin, initial: Level) -> Result<(), Error> {
        let raw = self.take(pin)?;
        // into_output_low/high set the level before switching to output: no glitch.
        let mut out = match initial {
            Level::Low => raw.into_output_low(),
            Level::High => raw.into_output_high(),
        };
        out.set_reset_on_drop(false);
        self.pins.insert(pin, Claimed::Output(out));
        Ok(())
    }

    fn claim_pwm(&mut self, pin: Pin, spec: PwmSpec) -> Result<(), Error> {
        if self.pins.contains_key(&pin) {
            return Err(Error::AlreadyClaimed { pin });
        }
        self.pwm.refresh();
        let claimed = match pwm_route(pin, spec.chip, spec.channel, &self.pwm)? {
            PwmRoute::Software => {
                if spec.channel.is_some()
                    && let Some(why) = self.pwm.missing()
                {
                    log::warn!("hardware: GPIO {pin}: {why}; falling back to software PWM");
                }
                self.claim_software_pwm(pin, &spec)?
            }
            PwmRoute::Hardware {
                chip,
                channel,
                configured,
            } => match self.claim_hardware_pwm(pin, chip, channel, &spec) {
                Ok(pwm) => Claimed::HardPwm(pwm),
                Err(HardPwmError::NotSetUp(e)) if !configured => {
                    log::warn!("hardware: {e}; falling back to software PWM");
                    self.claim_software_pwm(pin, &spec)?
                }
                Err(HardPwmError::NotSetUp(e) | HardPwmError::Failed(e)) => return Err(e),
            },
        };
        self.pins.insert(pin, claimed);
        Ok(())
    }

    /// Dropping an input stops rppal's interrupt thread and a software PWM pin stops its PWM
    /// thread (after the current period); both join, which is fine at reload and exit.
    fn release(&mut self, pin: Pin) {
        self.pins.remove(&pin);
    }

    fn read(&mut self, pin: Pin) -> Result<Level, Error> {
        match self.pins.get(&pin) {
            Some(Claimed::Input { pin: input, .. }) => Ok(level_of(input.read())),
            Some(Claimed::Output(out)) => Ok(Level::from_bool(out.is_set_high())),
            _ => Err(Error::NotClaimed {
                pin,
                what: "as an input",
            }),
        }
    }

    fn write(&mut self, pin: Pin, level: Level) -> Result<(), Error> {
        match self.pins.get_mut(&pin) {
            Some(Claimed::Output(out)) => {
                out.write(rppal_level(level));
                Ok(())
            }
            _ => Err(Error::NotClaimed {
                pin,
                what: "as an output",
            }),
        }
    }

    fn set_pwm(&mut self, pin: Pin, pulse_ns: u64) -> Result<(), Error> {
        match self.pins.get_mut(&pin) {
            Some(Claimed::HardPwm(pwm)) => {
                let (chip, channel) = (pwm.chip(), pwm.channel());
                pwm.set_pulse(pulse_ns)
                    .map_err(|e| e.into_hw(pin, chip, channel))
            }
            Some(Claimed::SoftPwm {
                pin: out,
                period,
                running,
            }) => set_soft_pulse(pin, out, *period, running, pulse_ns),
            _ => Err(Error::NotClaimed {
                pin,
                what: "for PWM",
            }),
        }
    }

    fn take_edges(&mut self, out: &mut Vec<Edge>) -> Result<(), Error> {
        let pins = &self.pins;
        self.edges.drain(out, |pin, claim| {
            matches!(pins.get(&pin), Some(Claimed::Input { claim: current, .. }) if *current == claim)
        });
        Ok(())
    }
}

/// A software PWM pulse; 0 keeps the line low. A pulse longer than the period is refused
/// (rppal would silently clamp it to a constant high).
fn set_soft_pulse(
    pin: Pin,
    out: &mut OutputPin,
    period: Duration,
    running: &mut bool,
    pulse_ns: u64,
) -> Result<(), Error> {
    let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    if pulse_ns > period_ns {
        return Err(Error::PulseTooLong {
            pin,
            pulse_ns,
            period_ns,
        });
    }
    if pulse_ns == 0 && !*running {
        return Ok(());
    }
    out.set_pwm(period, Duration::from_nanos(pulse_ns))
        .map_err(|e| map_gpio_error(e, Some(pin), None))?;
    *running = true;
    Ok(())
}

/// An edge tagged with the claim it belongs to.
struct TaggedEdge {
    claim: u64,
    edge: Edge,
}

/// The hand-over from rppal's interrupt threads to the loop thread: a channel plus the waker.
/// The waker sits behind a mutex so `attach` may come after a claim; the lock is held only for
/// the clone, never across a poll.
struct EdgeQueue {
    tx: Sender<TaggedEdge>,
    rx: Receiver<TaggedEdge>,
    waker: Arc<Mutex<Option<Arc<mio::Waker>>>>,
    next_claim: u64,
}

/// One failed wake is worth an error line; a stuck eventfd must not flood the log.
static WAKE_FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

impl EdgeQueue {
    fn new() -> Self {
        let (tx, rx) = channel();
        EdgeQueue {
            tx,
            rx,
            waker: Arc::new(Mutex::new(None)),
            next_claim: 0,
        }
    }

    fn set_waker(&mut self, waker: Arc<mio::Waker>) {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker);
    }

    /// A new claim number for `pin` and the callback rppal runs on its interrupt thread for
    /// each of the pin's edges: queue it and wake the loop, nothing else.
    fn sender_for(&mut self, pin: Pin) -> (u64, impl FnMut(Event) + Send + 'static) {
        let claim = self.next_claim;
        self.next_claim += 1;
        let tx = self.tx.clone();
        let waker = Arc::clone(&self.waker);
        let on_edge = move |event: Event| {
            let edge = edge_from_event(pin, &event);
            // Fails only once the backend (the receiver) is gone: nobody left to wake.
            if tx.send(TaggedEdge { claim, edge }).is_err() {
                return;
            }
            let waker = waker.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(waker) = waker
                && let Err(e) = waker.wake()
                && !WAKE_FAILURE_LOGGED.swap(true, Ordering::Relaxed)
            {
                log::error!("hardware: cannot wake the event loop for GPIO edges: {e}");
            }
        };
        (claim, on_edge)
    }

    /// Moves queued edges into `out`, in the order they happened, dropping those `is_current`
    /// rejects (their pin was released, or released and claimed again, since).
    fn drain(&self, out: &mut Vec<Edge>, is_current: impl Fn(Pin, u64) -> bool) {
        let start = out.len();
        while let Ok(tagged) = self.rx.try_recv() {
            if is_current(tagged.edge.pin, tagged.claim) {
                out.push(tagged.edge);
            }
        }
        // Each pin has its own interrupt thread, so the channel's order is only roughly time.
        out[start..].sort_by_key(|edge| edge.at);
    }
}

/// rppal reads the kernel's line event, stamped in the interrupt on CLOCK_MONOTONIC (the
/// uAPI v2 default), the clock [`monotonic_now`] reads; that stamp is closer to the edge than
/// any time taken on the interrupt thread, which is the fallback if the kernel gave none.
fn edge_from_event(pin: Pin, event: &Event) -> Edge {
    Edge {
        pin,
        level: match event.trigger {
            Trigger::RisingEdge => Level::High,
            _ => Level::Low,
        },
        at: if event.timestamp.is_zero() {
            monotonic_now()
        } else {
            event.timestamp
        },
    }
}

fn level_of(level: gpio::Level) -> Level {
    Level::from_bool(level == gpio::Level::High)
}

fn rppal_level(level: Level) -> gpio::Level {
    match level {
        Level::Low => gpio::Level::Low,
        Level::High => gpio::Level::High,
    }
}

/// What rppal's errors mean for the site owner. `pin` is `None` while opening the GPIO, where
/// a missing device means this is no Pi; `holder` names who holds a busy line, if known.
fn map_gpio_error(e: gpio::Error, pin: Option<Pin>, holder: Option<String>) -> Error {
    match e {
        gpio::Error::UnknownModel => Error::NotAPi {
            detail: "rppal cannot identify the board model".into(),
        },
        gpio::Error::PermissionDenied(path) => Error::PermissionDenied { path },
        // sited's own map catches a second claim first; this is the same thing seen by rppal.
        gpio::Error::PinUsed(bcm) => Error::AlreadyClaimed {
            pin: Pin::from(bcm),
        },
        gpio::Error::PinNotAvailable(bcm) => Error::NoSuchPin {
            pin: Pin::from(bcm),
            chip: "this Raspberry Pi".into(),
        },
        gpio::Error::Io(source) => match pin {
            None if source.kind() == io::ErrorKind::NotFound => Error::NotAPi {
                detail: format!("no /dev/gpiomem or Raspberry Pi GPIO chip ({source})"),
            },
            _ if source.kind() == io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                path: "/dev/gpiomem or /dev/gpiochip*".into(),
            },
            Some(pin) if source.raw_os_error() == Some(libc::EBUSY) => Error::PinBusy {
                pin,
                holder: holder.unwrap_or_else(|| describe_holder("")),
            },
            Some(pin) => Error::io(format!("GPIO {pin}"), source),
            None => Error::io("opening the Raspberry Pi GPIO", source),
        },
        gpio::Error::ThreadPanic => Error::io(
            match pin {
                Some(pin) => format!("GPIO {pin}"),
                None => "Raspberry Pi GPIO".into(),
            },
            io::Error::other("an rppal worker thread panicked"),
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum PwmRoute {
    Hardware {
        chip: u32,
        channel: u32,
        /// Asked for in the config (so failing is an error), rather than assumed.
        configured: bool,
    },
    Software,
}

/// Hardware PWM when the config names a chip and channel or the pin has a known default (the
/// Pi's own PWM device, found by its device, and the Pi's routing of the pin); a half-given
/// chip/channel is completed from the defaults. Otherwise software PWM.
fn pwm_route(
    pin: Pin,
    chip: Option<u32>,
    channel: Option<u32>,
    defaults: &super::PwmDefaults,
) -> Result<PwmRoute, Error> {
    let default = defaults.default_for(pin);
    let (chip, channel) = match (chip, channel) {
        (Some(c), None) => (Some(c), defaults.channel_for(pin)),
        // A channel without a known chip (the Pi's PWM not enabled, or its driver not loaded
        // yet): software PWM, as for a pin without a default, with a warning.
        (None, Some(_)) if defaults.chip().is_none() => return Ok(PwmRoute::Software),
        (None, Some(ch)) => (defaults.chip(), Some(ch)),
        other => other,
    };
    match (chip, channel, default) {
        (Some(chip), Some(channel), _) => Ok(PwmRoute::Hardware {
            chip,
            channel,
            configured: true,
        }),
        (None, None, Some((chip, channel))) => Ok(PwmRoute::Hardware {
            chip,
            channel,
            configured: false,
        }),
        (None, None, None) => Ok(PwmRoute::Software),
        (Some(chip), None, Some((_, channel))) | (None, Some(channel), Some((chip, _))) => {
            Ok(PwmRoute::Hardware {
                chip,
                channel,
                configured: true,
            })
        }
        (Some(_), None, _) | (None, Some(_), _) => Err(Error::PwmNotConfigured {
            pin,
            why: "only one of pwm-chip and pwm-channel is set, and this board gives no default for the other ([hardware] pwm-chip chooses the chip)",
        }),
    }
}

/// The pin function that routes the Pi's own PWM to `pin`. Pi 1-4: ALT0 on GPIO 12/13, ALT5 on
/// 18/19. Pi 5 (RP1): a0 on 12/13 (PWM0 channels 0 and 1), a3 on 18/19 (channels 2 and 3).
fn pi_pwm_mode(pi: PiPwm, pin: Pin) -> Option<Mode> {
    match (pi, pin) {
        (PiPwm::Bcm, 12 | 13) | (PiPwm::Rp1, 12 | 13) => Some(Mode::Alt0),
        (PiPwm::Bcm, 18 | 19) => Some(Mode::Alt5),
        (PiPwm::Rp1, 18 | 19) => Some(Mode::Alt3),
        _ => None,
    }
}

/// Why a servo pin gets no PWM, and what switches it over: on a Pi 1-4 the config.txt line
/// (`func` is the pin-function code: 4 = ALT0, 2 = ALT5); on a Pi 5 the `pinctrl` function
/// name, for `pinctrl set` now and the overlay at boot.
fn not_switched_to_pwm(pi: PiPwm, pin: Pin, mode: Mode) -> String {
    match pi {
        PiPwm::Bcm => {
            let func = if pi_pwm_mode(pi, pin) == Some(Mode::Alt0) {
                4
            } else {
                2
            };
            format!(
                "GPIO {pin} is not switched to PWM (its mode is {mode}); add `dtoverlay=pwm,pin={pin},func={func}` to /boot/firmware/config.txt and reboot"
            )
        }
        PiPwm::Rp1 => {
            let func = if pi_pwm_mode(pi, pin) == Some(Mode::Alt0) {
                "a0"
            } else {
                "a3"
            };
            format!(
                "GPIO {pin} is not switched to PWM (its function is {mode}, PWM is {func}); `pinctrl set {pin} {func}` switches it until the next boot, a pwm or pwm-2chan overlay in /boot/firmware/config.txt at every boot"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Instant;

    const WAKE: Token = Token(7);

    fn event(trigger: Trigger, timestamp: Duration) -> Event {
        Event {
            timestamp,
            seqno: 1,
            trigger,
        }
    }

    #[test]
    fn rising_and_falling_events_become_high_and_low_edges_at_the_kernel_stamp() {
        let rising = edge_from_event(23, &event(Trigger::RisingEdge, Duration::new(5, 9)));
        let falling = edge_from_event(23, &event(Trigger::FallingEdge, Duration::new(6, 0)));

        assert_eq!(
            rising,
            Edge {
                pin: 23,
                level: Level::High,
                at: Duration::new(5, 9)
            }
        );
        assert_eq!(falling.level, Level::Low);
        assert_eq!(falling.at, Duration::new(6, 0));
    }

    #[test]
    fn an_event_without_a_stamp_is_stamped_on_arrival() {
        let before = monotonic_now();

        let edge = edge_from_event(23, &event(Trigger::RisingEdge, Duration::ZERO));

        assert!(edge.at >= before);
    }

    #[test]
    fn an_edge_from_the_interrupt_thread_is_queued_and_wakes_the_loop() {
        let mut poll = Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE).expect("waker"));
        let mut queue = EdgeQueue::new();
        queue.set_waker(waker);
        let (claim, mut on_edge) = queue.sender_for(17);

        std::thread::spawn(move || on_edge(event(Trigger::FallingEdge, Duration::new(1, 0))))
            .join()
            .expect("interrupt thread");

        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.iter().all(|e| e.token() != WAKE) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the loop was never woken");
            poll.poll(&mut events, Some(left)).expect("poll");
        }
        let mut edges = Vec::new();
        queue.drain(&mut edges, |pin, c| pin == 17 && c == claim);
        assert_eq!(
            edges,
            vec![Edge {
                pin: 17,
                level: Level::Low,
                at: Duration::new(1, 0)
            }]
        );
    }

    #[test]
    fn edges_of_an_earlier_claim_of_the_pin_are_dropped() {
        let mut queue = EdgeQueue::new();
        let (_old_claim, mut old) = queue.sender_for(17);
        let (new_claim, mut new) = queue.sender_for(17);
        old(event(Trigger::RisingEdge, Duration::new(1, 0)));
        new(event(Trigger::FallingEdge, Duration::new(2, 0)));

        let mut edges = Vec::new();
        queue.drain(&mut edges, |_, claim| claim == new_claim);

        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].level, Level::Low);
    }

    #[test]
    fn drained_edges_are_in_time_order_across_pins() {
        let mut queue = EdgeQueue::new();
        let (_, mut a) = queue.sender_for(5);
        let (_, mut b) = queue.sender_for(6);
        a(event(Trigger::RisingEdge, Duration::new(3, 0)));
        b(event(Trigger::RisingEdge, Duration::new(2, 0)));

        let mut edges = Vec::new();
        queue.drain(&mut edges, |_, _| true);

        assert_eq!(edges.iter().map(|e| e.pin).collect::<Vec<_>>(), vec![6, 5]);
    }

    #[test]
    fn an_unknown_model_is_not_a_pi_and_suggests_sim() {
        let err = map_gpio_error(gpio::Error::UnknownModel, None, None);

        assert!(matches!(err, Error::NotAPi { .. }));
        assert!(err.to_string().contains("backend = \"sim\""));
    }

    #[test]
    fn a_missing_gpiomem_at_open_is_not_a_pi() {
        let err = map_gpio_error(
            gpio::Error::Io(io::Error::from_raw_os_error(libc::ENOENT)),
            None,
            None,
        );

        assert!(matches!(err, Error::NotAPi { .. }), "{err:?}");
    }

    #[test]
    fn permission_denied_names_the_device_and_the_gpio_group() {
        let err = map_gpio_error(
            gpio::Error::PermissionDenied("/dev/gpiomem".into()),
            None,
            None,
        );

        assert!(matches!(&err, Error::PermissionDenied { path } if path == "/dev/gpiomem"));
        assert!(err.to_string().contains("`gpio` group"));
    }

    #[test]
    fn ebusy_on_a_pin_names_the_holder_when_known() {
        let busy = || gpio::Error::Io(io::Error::from_raw_os_error(libc::EBUSY));

        let known = map_gpio_error(busy(), Some(4), Some("\"gpiomon\" holds it".into()));
        let unknown = map_gpio_error(busy(), Some(4), None);

        assert!(
            matches!(&known, Error::PinBusy { pin: 4, holder } if holder.contains("gpiomon")),
            "{known:?}"
        );
        assert!(
            matches!(&unknown, Error::PinBusy { holder, .. } if holder.contains("another program")),
            "{unknown:?}"
        );
    }

    #[test]
    fn a_pin_beyond_the_header_is_no_such_pin() {
        let err = map_gpio_error(gpio::Error::PinNotAvailable(60), Some(60), None);

        assert!(matches!(err, Error::NoSuchPin { pin: 60, .. }));
    }

    /// A Pi 1-4 whose PWM device is pwmchip0.
    fn pi_1_to_4() -> super::super::PwmDefaults {
        super::super::PwmDefaults {
            chip: Some((0, "pwmchip0 (fe20c000.pwm)".into())),
            pi: Some(PiPwm::Bcm),
            ..Default::default()
        }
    }

    #[test]
    fn pi_1_to_4_pwm_pins_use_hardware_pwm_by_default() {
        assert_eq!(
            pwm_route(18, None, None, &pi_1_to_4()).expect("route"),
            PwmRoute::Hardware {
                chip: 0,
                channel: 0,
                configured: false
            }
        );
        assert_eq!(
            pwm_route(17, None, None, &pi_1_to_4()).expect("route"),
            PwmRoute::Software
        );
    }

    #[test]
    fn a_configured_chip_and_channel_win_on_any_board() {
        assert_eq!(
            pwm_route(18, Some(2), Some(2), &super::super::PwmDefaults::default()).expect("route"),
            PwmRoute::Hardware {
                chip: 2,
                channel: 2,
                configured: true
            }
        );
    }

    #[test]
    fn without_a_known_pwm_chip_nothing_is_assumed() {
        assert_eq!(
            pwm_route(18, None, None, &super::super::PwmDefaults::default()).expect("route"),
            PwmRoute::Software
        );
        assert!(matches!(
            pwm_route(18, Some(0), None, &super::super::PwmDefaults::default()),
            Err(Error::PwmNotConfigured { pin: 18, .. })
        ));
    }

    #[test]
    fn a_channel_without_a_known_chip_falls_back_to_software_pwm() {
        // The shipped config names channels; a Pi without its PWM overlay still runs.
        assert_eq!(
            pwm_route(12, None, Some(0), &super::super::PwmDefaults::default()).expect("route"),
            PwmRoute::Software
        );
    }

    #[test]
    fn half_a_pwm_setting_is_completed_from_the_default() {
        assert_eq!(
            pwm_route(19, None, Some(1), &pi_1_to_4()).expect("route"),
            PwmRoute::Hardware {
                chip: 0,
                channel: 1,
                configured: true
            }
        );
    }

    #[test]
    fn a_pi_5_routes_gpio_18_to_channel_2_of_the_rp1_chip_found_by_device() {
        let pi5 = super::super::PwmDefaults {
            chip: Some((2, "pwmchip2 (1f00098000.pwm)".into())),
            pi: Some(PiPwm::Rp1),
            ..Default::default()
        };
        assert_eq!(
            pwm_route(18, None, None, &pi5).expect("route"),
            PwmRoute::Hardware {
                chip: 2,
                channel: 2,
                configured: false
            }
        );
        // A number in the device's config still wins.
        assert_eq!(
            pwm_route(18, Some(0), Some(2), &pi5).expect("route"),
            PwmRoute::Hardware {
                chip: 0,
                channel: 2,
                configured: true
            }
        );
    }

    #[test]
    fn the_overlay_hint_uses_each_pins_pwm_function() {
        let hint = |pi, pin| not_switched_to_pwm(pi, pin, Mode::Input);
        assert!(hint(PiPwm::Bcm, 12).contains("`dtoverlay=pwm,pin=12,func=4`"));
        assert!(hint(PiPwm::Bcm, 18).contains("`dtoverlay=pwm,pin=18,func=2`"));
        assert!(hint(PiPwm::Rp1, 13).contains("`pinctrl set 13 a0`"));
        assert!(hint(PiPwm::Rp1, 19).contains("`pinctrl set 19 a3`"));
        assert!(hint(PiPwm::Rp1, 19).contains("its function is In"));
    }

    #[test]
    fn each_pis_pwm_pins_have_their_own_function() {
        // Pi 1-4: BCM2835 ALT0 on 12/13, ALT5 on 18/19. Pi 5: RP1 PWM0_CHAN0..3 are a0 on
        // 12/13 and a3 on 18/19 (RP1 datasheet, GPIO function table).
        for (pin, bcm, rp1) in [
            (12, Some(Mode::Alt0), Some(Mode::Alt0)),
            (13, Some(Mode::Alt0), Some(Mode::Alt0)),
            (18, Some(Mode::Alt5), Some(Mode::Alt3)),
            (19, Some(Mode::Alt5), Some(Mode::Alt3)),
            (17, None, None),
        ] {
            assert_eq!(pi_pwm_mode(PiPwm::Bcm, pin), bcm, "GPIO {pin}");
            assert_eq!(pi_pwm_mode(PiPwm::Rp1, pin), rp1, "GPIO {pin}");
        }
    }
}
