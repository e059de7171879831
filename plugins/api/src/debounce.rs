//! Leading-edge debounce with a lockout, shared by the input plugins (button, reed, switch).
//! A change is accepted on its first edge, so a press costs no latency; the bounces that follow
//! are ignored for the lockout, and the pin is read again when it ends so that a change made
//! during the lockout (a quick tap's release) is not lost.

use crate::host::{Host, Level};

/// The debounced level of one input pin. The owning device forwards its edges to
/// [`Debouncer::on_edge`] and its lockout timer to [`Debouncer::lockout_ended`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debouncer {
    pin: u32,
    timer_id: u64,
    lockout_us: u64,
    level: Level,
    locked_out: bool,
}

impl Debouncer {
    /// `initial` is the pin's level as read at create; `timer_id` is the device's own id for
    /// the lockout timer (it must not collide with the device's other timers). A lockout of
    /// 0 ms accepts every change at once.
    pub fn new(pin: u32, timer_id: u64, lockout_ms: u64, initial: Level) -> Self {
        Debouncer {
            pin,
            timer_id,
            lockout_us: lockout_ms.saturating_mul(1000),
            level: initial,
            locked_out: false,
        }
    }

    /// The debounced level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The timer id to route to [`Debouncer::lockout_ended`].
    pub fn timer_id(&self) -> u64 {
        self.timer_id
    }

    pub fn locked_out(&self) -> bool {
        self.locked_out
    }

    /// An edge reported by the host. Returns the new debounced level if this edge changed it.
    pub fn on_edge(&mut self, host: &mut dyn Host, level: Level) -> Result<Option<Level>, String> {
        if self.locked_out || level == self.level {
            return Ok(None);
        }
        self.accept(host, level).map(Some)
    }

    /// The lockout timer fired. The pin may have settled at a level other than the one
    /// accepted when the lockout began; if so, that change is accepted now.
    pub fn lockout_ended(&mut self, host: &mut dyn Host) -> Result<Option<Level>, String> {
        self.locked_out = false;
        let now = host
            .read(self.pin)
            .map_err(|e| format!("reading GPIO {} after the debounce lockout: {e}", self.pin))?;
        if now == self.level {
            return Ok(None);
        }
        self.accept(host, now).map(Some)
    }

    /// Drops a running lockout (for `safe_state`); the debounced level is kept.
    pub fn cancel(&mut self, host: &mut dyn Host) {
        host.cancel_timer(self.timer_id);
        self.locked_out = false;
    }

    fn accept(&mut self, host: &mut dyn Host, level: Level) -> Result<Level, String> {
        self.level = level;
        if self.lockout_us > 0 {
            host.arm_timer(self.timer_id, self.lockout_us)
                .map_err(|e| format!("arming the debounce timer: {e}"))?;
            self.locked_out = true;
        }
        Ok(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, Role};
    use crate::fake::FakeHost;
    use crate::host::Bias;

    const PIN: u32 = 5;
    const TIMER: u64 = 7;
    const LOCKOUT_MS: u64 = 20;

    /// The smallest device around a debouncer, so the tests can use FakeHost's clock.
    struct Probe {
        debouncer: Debouncer,
        accepted: Vec<Level>,
    }

    impl Device for Probe {
        const KIND: &'static str = "probe";
        const ROLE: Role = Role::Input;
        type Config = u64;

        fn create(host: &mut dyn Host, lockout_ms: u64) -> Result<Self, String> {
            host.claim_input(PIN, Bias::PullUp, Level::High)
                .map_err(|e| e.to_string())?;
            let initial = host.read(PIN).map_err(|e| e.to_string())?;
            Ok(Probe {
                debouncer: Debouncer::new(PIN, TIMER, lockout_ms, initial),
                accepted: Vec::new(),
            })
        }

        fn on_edge(
            &mut self,
            host: &mut dyn Host,
            _: u32,
            level: Level,
            _: u64,
        ) -> Result<(), String> {
            self.accepted.extend(self.debouncer.on_edge(host, level)?);
            Ok(())
        }

        fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
            assert_eq!(id, TIMER, "only the lockout timer is armed");
            self.accepted.extend(self.debouncer.lockout_ended(host)?);
            Ok(())
        }

        fn safe_state(&mut self, host: &mut dyn Host) -> Result<(), String> {
            self.debouncer.cancel(host);
            Ok(())
        }
    }

    fn probe(lockout_ms: u64) -> (FakeHost, Probe) {
        let mut host = FakeHost::with_pins(&[PIN]);
        let probe = Probe::create(&mut host, lockout_ms).unwrap();
        (host, probe)
    }

    #[test]
    fn starts_at_the_level_read_at_create() {
        let (_host, probe) = probe(LOCKOUT_MS);

        assert_eq!(probe.debouncer.level(), Level::High);
    }

    #[test]
    fn first_edge_is_accepted_at_once_and_arms_the_lockout() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);

        host.edge(&mut probe, PIN, Level::Low).unwrap();

        assert_eq!(probe.accepted, vec![Level::Low]);
        assert_eq!(host.timers.get(&TIMER), Some(&(LOCKOUT_MS * 1000)));
        assert!(probe.debouncer.locked_out());
    }

    #[test]
    fn bounce_within_lockout_is_ignored() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();

        host.advance(&mut probe, 1_000).unwrap();
        host.edge(&mut probe, PIN, Level::High).unwrap();
        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.advance(&mut probe, LOCKOUT_MS * 1000).unwrap();

        assert_eq!(probe.accepted, vec![Level::Low]);
        assert!(!probe.debouncer.locked_out());
    }

    #[test]
    fn change_during_lockout_is_accepted_when_it_ends() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.edge(&mut probe, PIN, Level::High).unwrap();

        host.advance(&mut probe, LOCKOUT_MS * 1000).unwrap();

        assert_eq!(probe.accepted, vec![Level::Low, Level::High]);
        assert_eq!(host.now_us, LOCKOUT_MS * 1000);
    }

    #[test]
    fn change_accepted_at_lockout_end_starts_another_lockout() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.edge(&mut probe, PIN, Level::High).unwrap();

        host.advance(&mut probe, LOCKOUT_MS * 1000).unwrap();

        assert!(probe.debouncer.locked_out());
        assert_eq!(host.timers.get(&TIMER), Some(&(2 * LOCKOUT_MS * 1000)));
    }

    #[test]
    fn edge_after_lockout_is_accepted_at_once() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.advance(&mut probe, LOCKOUT_MS * 1000).unwrap();

        host.edge(&mut probe, PIN, Level::High).unwrap();

        assert_eq!(probe.accepted, vec![Level::Low, Level::High]);
    }

    #[test]
    fn edge_at_the_debounced_level_is_ignored() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);

        host.edge(&mut probe, PIN, Level::High).unwrap();

        assert!(probe.accepted.is_empty());
        assert!(host.timers.is_empty());
    }

    #[test]
    fn zero_lockout_accepts_every_change_without_a_timer() {
        let (mut host, mut probe) = probe(0);

        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.edge(&mut probe, PIN, Level::High).unwrap();
        host.edge(&mut probe, PIN, Level::Low).unwrap();

        assert_eq!(probe.accepted, vec![Level::Low, Level::High, Level::Low]);
        assert!(host.timers.is_empty());
    }

    #[test]
    fn cancel_drops_the_lockout_timer() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();

        probe.safe_state(&mut host).unwrap();

        assert!(host.timers.is_empty());
        assert!(!probe.debouncer.locked_out());
        assert_eq!(probe.debouncer.level(), Level::Low);
    }

    #[test]
    fn read_failure_at_lockout_end_is_an_error_naming_the_pin() {
        let (mut host, mut probe) = probe(LOCKOUT_MS);
        host.edge(&mut probe, PIN, Level::Low).unwrap();
        host.fail_hardware = true;

        let err = host.advance(&mut probe, LOCKOUT_MS * 1000).unwrap_err();

        assert!(err.contains("GPIO 5"), "{err}");
    }
}
