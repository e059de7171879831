//! The loop's one timer heap: deadlines on the monotonic clock, keyed so a timer can be re-armed
//! or cancelled. The earliest deadline sets the poll timeout, so an idle daemon sleeps until the
//! next thing it must do (DESIGN.md §4). Cancelled entries are dropped lazily when they surface.
//!
//! Only the loop owns a heap. The devices, the hub and the site runner own none: each queues
//! [`TimerAsk`]s in its [`TimerAsks`], and the loop applies them to its heap under a key that
//! says whose timer it is, and hands each timer back to its owner when it fires.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;

/// The monotonic clock edges and timers use (CLOCK_MONOTONIC, as cdev's edge timestamps).
pub fn monotonic_now() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_MONOTONIC exists on every Linux; clock_gettime fails only for an unknown clock.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// What a component asks of the loop's timer heap, in its own key type `K`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerAsk<K> {
    /// Fire `K` at this deadline (replacing an earlier arming of it).
    Arm(K, Duration),
    Cancel(K),
}

/// A component's asks since the loop last took them, in order.
#[derive(Debug)]
pub struct TimerAsks<K>(Vec<TimerAsk<K>>);

impl<K> Default for TimerAsks<K> {
    fn default() -> Self {
        TimerAsks(Vec::new())
    }
}

impl<K> TimerAsks<K> {
    pub fn arm(&mut self, key: K, deadline: Duration) {
        self.0.push(TimerAsk::Arm(key, deadline));
    }

    pub fn cancel(&mut self, key: K) {
        self.0.push(TimerAsk::Cancel(key));
    }

    /// The asks, for the loop to apply.
    pub fn take(&mut self) -> Vec<TimerAsk<K>> {
        std::mem::take(&mut self.0)
    }
}

/// A deadline heap over keys of type `K`; arming a key again replaces its deadline.
#[derive(Debug)]
pub struct Timers<K> {
    heap: BinaryHeap<Reverse<(Duration, u64)>>,
    /// The live arming of each key: its sequence number and key. Heap entries whose sequence
    /// is no longer live were cancelled or re-armed.
    live: HashMap<u64, K>,
    seq_of: HashMap<K, (u64, Duration)>,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            seq_of: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Timers<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `key` to fire at `deadline`, replacing any earlier arming of the same key.
    pub fn arm(&mut self, key: K, deadline: Duration) {
        self.cancel(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((deadline, seq)));
        self.live.insert(seq, key.clone());
        self.seq_of.insert(key, (seq, deadline));
    }

    /// Cancels `key` if armed. Returns whether it was.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.seq_of.remove(key) {
            Some((seq, _)) => {
                self.live.remove(&seq);
                true
            }
            None => false,
        }
    }

    /// Cancels every key `pred` selects (a device being destroyed, say).
    pub fn cancel_where(&mut self, mut pred: impl FnMut(&K) -> bool) {
        let doomed: Vec<K> = self.seq_of.keys().filter(|k| pred(k)).cloned().collect();
        for key in doomed {
            self.cancel(&key);
        }
    }

    pub fn is_armed(&self, key: &K) -> bool {
        self.seq_of.contains_key(key)
    }

    /// When `key` fires, if armed.
    pub fn deadline_of(&self, key: &K) -> Option<Duration> {
        self.seq_of.get(key).map(|(_, at)| *at)
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Duration> {
        self.drop_dead_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// How long the loop may sleep from `now` (None: until something happens).
    pub fn timeout(&mut self, now: Duration) -> Option<Duration> {
        self.next_deadline().map(|at| at.saturating_sub(now))
    }

    /// Removes and returns the earliest key due at or before `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<K> {
        self.drop_dead_top();
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((_, seq)) = self.heap.pop()?;
                let key = self.live.remove(&seq)?;
                self.seq_of.remove(&key);
                Some(key)
            }
            _ => None,
        }
    }

    /// Applies a component's asks, each under the loop's key for it (`whose`).
    pub fn apply<S>(&mut self, asks: Vec<TimerAsk<S>>, whose: impl Fn(S) -> K) {
        for ask in asks {
            match ask {
                TimerAsk::Arm(key, deadline) => self.arm(whose(key), deadline),
                TimerAsk::Cancel(key) => {
                    self.cancel(&whose(key));
                }
            }
        }
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn drop_dead_top(&mut self) {
        while let Some(Reverse((_, seq))) = self.heap.peek() {
            if self.live.contains_key(seq) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadline_of_follows_arming_cancelling_and_firing() {
        let mut t: Timers<&str> = Timers::new();
        assert_eq!(t.deadline_of(&"gap"), None);
        t.arm("gap", Duration::from_secs(2));
        assert_eq!(t.deadline_of(&"gap"), Some(Duration::from_secs(2)));
        t.arm("gap", Duration::from_secs(3));
        assert_eq!(t.deadline_of(&"gap"), Some(Duration::from_secs(3)));
        assert_eq!(t.pop_due(Duration::from_secs(3)), Some("gap"));
        assert_eq!(t.deadline_of(&"gap"), None, "fired");
        t.arm("gap", Duration::from_secs(5));
        t.cancel(&"gap");
        assert_eq!(t.deadline_of(&"gap"), None, "cancelled");
    }

    #[test]
    fn timers_fire_in_deadline_order() {
        let mut t = Timers::new();
        t.arm("b", ms(20));
        t.arm("a", ms(10));
        t.arm("c", ms(30));
        assert_eq!(t.pop_due(ms(25)), Some("a"));
        assert_eq!(t.pop_due(ms(25)), Some("b"));
        assert_eq!(t.pop_due(ms(25)), None);
        assert_eq!(t.pop_due(ms(30)), Some("c"));
        assert!(t.is_empty());
    }

    #[test]
    fn rearming_replaces_the_old_deadline() {
        let mut t = Timers::new();
        t.arm("x", ms(10));
        t.arm("x", ms(50));
        assert_eq!(t.pop_due(ms(20)), None);
        assert_eq!(t.next_deadline(), Some(ms(50)));
        assert_eq!(t.pop_due(ms(50)), Some("x"));
        assert_eq!(t.pop_due(ms(100)), None);
    }

    #[test]
    fn cancelled_timer_never_fires_and_does_not_set_the_timeout() {
        let mut t = Timers::new();
        t.arm("x", ms(10));
        t.arm("y", ms(40));
        assert!(t.cancel(&"x"));
        assert!(!t.cancel(&"x"));
        assert_eq!(t.timeout(ms(5)), Some(ms(35)));
        assert_eq!(t.pop_due(ms(100)), Some("y"));
        assert_eq!(t.pop_due(ms(100)), None);
    }

    #[test]
    fn no_timers_means_no_timeout() {
        let mut t: Timers<u8> = Timers::new();
        assert_eq!(t.timeout(ms(0)), None);
    }

    #[test]
    fn overdue_timer_gives_zero_timeout() {
        let mut t = Timers::new();
        t.arm(1u8, ms(10));
        assert_eq!(t.timeout(ms(15)), Some(Duration::ZERO));
    }

    #[test]
    fn a_components_asks_land_under_its_own_key_in_order() {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        enum Whose {
            Loop(u8),
            Device(u8),
        }
        let mut t = Timers::new();
        t.arm(Whose::Loop(1), ms(5));
        let mut asks = TimerAsks::default();
        asks.arm(1u8, ms(10));
        asks.arm(2u8, ms(20));
        asks.cancel(2u8);
        asks.arm(1u8, ms(30));
        t.apply(asks.take(), Whose::Device);
        assert!(asks.take().is_empty(), "taken once");
        assert_eq!(t.pop_due(ms(100)), Some(Whose::Loop(1)));
        assert_eq!(t.pop_due(ms(100)), Some(Whose::Device(1)));
        assert_eq!(t.deadline_of(&Whose::Device(1)), None);
        assert_eq!(t.pop_due(ms(100)), None, "the cancel came after the arm");
    }

    #[test]
    fn cancel_where_drops_a_group() {
        let mut t = Timers::new();
        t.arm((1, 1), ms(1));
        t.arm((1, 2), ms(2));
        t.arm((2, 1), ms(3));
        t.cancel_where(|(dev, _)| *dev == 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(ms(10)), Some((2, 1)));
    }
}
