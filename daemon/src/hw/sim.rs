//! Simulated pins, in memory. Inputs change only through [`Hardware::simulate`] (from
//! `sitectl sim`); the resulting edge is queued and the loop is woken through the one waker,
//! exactly as the rppal backend's interrupt thread does. Outputs and PWM are recorded, and, if
//! `[hardware] sim-pins` names a file, every pin's level is written there on each change, so
//! tests and demos can see the "wires" even after the daemon has exited.

use super::{Edge, EdgeSink, Error, Hardware, Pin};
use crate::timers::monotonic_now;
use site_plugin_api::{Bias, Level, PwmSpec};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// The input levels a pins file records (missing or unreadable file: none).
fn read_input_levels(path: &std::path::Path) -> HashMap<Pin, Level> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let Ok(serde_json::Value::Object(pins)) = serde_json::from_str(&text) else {
        return HashMap::new();
    };
    pins.iter()
        .filter(|(_, v)| v["mode"] == "input")
        .filter_map(|(pin, v)| {
            let level = match v["level"].as_str()? {
                "high" => Level::High,
                "low" => Level::Low,
                _ => return None,
            };
            Some((pin.parse().ok()?, level))
        })
        .collect()
}

fn level_word(level: Level) -> &'static str {
    if level.is_high() { "high" } else { "low" }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimPin {
    Input { level: Level },
    Output { level: Level },
    Pwm { pulse_ns: u64 },
}

#[derive(Default)]
pub struct SimBackend {
    pins: HashMap<Pin, SimPin>,
    /// Pins given back, with the level they were left at (shown in the pins file).
    released: HashMap<Pin, SimPin>,
    queued: VecDeque<Edge>,
    waker: Option<Arc<mio::Waker>>,
    pins_file: Option<PathBuf>,
    /// Said once, not on every write.
    pins_file_failing: bool,
    /// Input levels found in the pins file at start; they win over an input's rest level.
    wired: HashMap<Pin, Level>,
    /// When each output was last written (monotonic), for the latency benchmark.
    written_at: HashMap<Pin, std::time::Duration>,
    /// `[hardware] sim-wire`: the socket that plays the wires, and who last sent an edge.
    wire: Option<Wire>,
}

/// A Unix datagram socket standing in for the wires (see `[hardware] sim-wire`): edges come in
/// stamped by the sender, as the kernel stamps real ones, and wait in the socket until the
/// loop reads them, as they wait in a GPIO line's fd; output writes go back to the sender.
struct Wire {
    socket: mio::net::UnixDatagram,
    path: PathBuf,
    peer: Option<std::os::unix::net::SocketAddr>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl SimBackend {
    pub fn new() -> Self {
        SimBackend::default()
    }

    /// A sim backend that mirrors every pin into `path` (JSON, replaced atomically).
    ///
    /// Inputs recorded in an existing file keep their level, as real wires would across a
    /// restart of the daemon (an emergency door left open is still open).
    pub fn with_pins_file(path: Option<PathBuf>) -> Self {
        let wired = path.as_deref().map(read_input_levels).unwrap_or_default();
        let mut sim = SimBackend {
            pins_file: path,
            wired,
            ..SimBackend::default()
        };
        sim.write_pins_file();
        sim
    }

    /// Binds the wire socket at `path` (a stale socket file from an earlier run is replaced).
    pub fn wire(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(path)?;
        }
        let socket = mio::net::UnixDatagram::bind(path)?;
        self.wire = Some(Wire {
            socket,
            path: path.to_path_buf(),
            peer: None,
        });
        Ok(())
    }

    /// Tells the wire's far end about an output write.
    fn wire_out(&mut self, pin: Pin, what: &str) {
        if let Some(Wire {
            socket,
            peer: Some(peer),
            ..
        }) = &self.wire
            && let Some(to) = peer.as_pathname()
        {
            let line = format!("{} {pin} {what}", monotonic_now().as_nanos());
            // Best effort: a far end that stopped reading loses lines, the daemon nothing.
            let _ = socket.send_to(line.as_bytes(), to);
        }
    }

    /// Edges waiting in the wire socket: `<pin> <high|low> <monotonic ns>` each. A datagram
    /// that says anything else is logged and dropped.
    fn read_wire(&mut self) {
        let mut buf = [0u8; 128];
        let mut changed = false;
        while let Some(wire) = &mut self.wire {
            let (n, from) = match wire.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            wire.peer = Some(from);
            let text = String::from_utf8_lossy(&buf[..n]);
            let mut words = text.split_whitespace();
            let parsed = (|| {
                let pin: Pin = words.next()?.parse().ok()?;
                let level = match words.next()? {
                    "high" => Level::High,
                    "low" => Level::Low,
                    _ => return None,
                };
                let at: u64 = words.next()?.parse().ok()?;
                Some((pin, level, std::time::Duration::from_nanos(at)))
            })();
            let Some((pin, level, at)) = parsed else {
                log::warn!("sim: a wire datagram that is not `<pin> <high|low> <ns>`: {text:?}");
                continue;
            };
            if let Some(SimPin::Input { level: current }) = self.pins.get_mut(&pin)
                && *current != level
            {
                *current = level;
                self.queued.push_back(Edge { pin, level, at });
                changed = true;
            }
        }
        if changed {
            self.write_pins_file();
        }
    }

    /// The pins as JSON: `{"17": {"mode": "output", "level": "high"}, ...}`.
    pub fn snapshot(&self) -> serde_json::Value {
        let describe = |p: &SimPin, claimed: bool| {
            let mut v = match p {
                SimPin::Input { level } => {
                    serde_json::json!({ "mode": "input", "level": level_word(*level) })
                }
                SimPin::Output { level } => {
                    serde_json::json!({ "mode": "output", "level": level_word(*level) })
                }
                SimPin::Pwm { pulse_ns } => {
                    serde_json::json!({ "mode": "pwm", "pulse_ns": pulse_ns })
                }
            };
            v["claimed"] = serde_json::Value::Bool(claimed);
            v
        };
        let mut map = serde_json::Map::new();
        for (pin, p) in &self.released {
            map.insert(pin.to_string(), describe(p, false));
        }
        for (pin, p) in &self.pins {
            map.insert(pin.to_string(), describe(p, true));
        }
        serde_json::Value::Object(map)
    }

    fn write_pins_file(&mut self) {
        let Some(path) = &self.pins_file else { return };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("tmp");
        let text = self.snapshot().to_string();
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => self.pins_file_failing = false,
            Err(e) if !self.pins_file_failing => {
                log::warn!("sim: could not write {}: {e}", path.display());
                self.pins_file_failing = true;
            }
            Err(_) => {}
        }
    }

    /// The level last written to an output (for tests and benchmarks).
    pub fn output_level(&self, pin: Pin) -> Option<Level> {
        match self.pins.get(&pin) {
            Some(SimPin::Output { level }) => Some(*level),
            _ => None,
        }
    }

    /// When the output (or PWM pulse) was last written, on the monotonic clock.
    pub fn written_at(&self, pin: Pin) -> Option<std::time::Duration> {
        self.written_at.get(&pin).copied()
    }

    /// The pulse width last set on a PWM pin.
    pub fn pwm_pulse(&self, pin: Pin) -> Option<u64> {
        match self.pins.get(&pin) {
            Some(SimPin::Pwm { pulse_ns }) => Some(*pulse_ns),
            _ => None,
        }
    }

    fn claim(&mut self, pin: Pin, state: SimPin) -> Result<(), Error> {
        if self.pins.contains_key(&pin) {
            return Err(Error::AlreadyClaimed { pin });
        }
        self.pins.insert(pin, state);
        self.released.remove(&pin);
        self.write_pins_file();
        Ok(())
    }
}

impl Hardware for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn attach(&mut self, sink: EdgeSink) -> Result<(), Error> {
        if let Some(wire) = &mut self.wire {
            sink.registry
                .register(&mut wire.socket, sink.token, mio::Interest::READABLE)
                .map_err(|e| Error::io("registering the sim wire", e))?;
        }
        self.waker = Some(sink.waker);
        Ok(())
    }

    fn claim_input(&mut self, pin: Pin, bias: Bias) -> Result<(), Error> {
        // An open input floats to its pull; with no pull it reads low.
        let level = if bias == Bias::PullUp {
            Level::High
        } else {
            Level::Low
        };
        self.claim(pin, SimPin::Input { level })
    }

    fn claim_output(&mut self, pin: Pin, initial: Level) -> Result<(), Error> {
        self.claim(pin, SimPin::Output { level: initial })
    }

    fn claim_pwm(&mut self, pin: Pin, spec: PwmSpec) -> Result<(), Error> {
        self.claim(
            pin,
            SimPin::Pwm {
                pulse_ns: spec.safe_pulse_ns,
            },
        )
    }

    fn release(&mut self, pin: Pin) {
        if let Some(last) = self.pins.remove(&pin) {
            self.released.insert(pin, last);
        }
        self.queued.retain(|e| e.pin != pin);
        self.write_pins_file();
    }

    fn read(&mut self, pin: Pin) -> Result<Level, Error> {
        match self.pins.get(&pin) {
            Some(SimPin::Input { level }) | Some(SimPin::Output { level }) => Ok(*level),
            Some(SimPin::Pwm { .. }) | None => Err(Error::NotClaimed {
                pin,
                what: "as an input",
            }),
        }
    }

    fn write(&mut self, pin: Pin, level: Level) -> Result<(), Error> {
        match self.pins.get_mut(&pin) {
            Some(SimPin::Output { level: l }) => {
                *l = level;
                self.written_at.insert(pin, monotonic_now());
                self.wire_out(pin, level_word(level));
                self.write_pins_file();
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
            Some(SimPin::Pwm { pulse_ns: p }) => {
                *p = pulse_ns;
                self.written_at.insert(pin, monotonic_now());
                self.wire_out(pin, &pulse_ns.to_string());
                self.write_pins_file();
                Ok(())
            }
            _ => Err(Error::NotClaimed {
                pin,
                what: "for PWM",
            }),
        }
    }

    fn set_rest_level(&mut self, pin: Pin, level: Level) {
        let level = self.wired.get(&pin).copied().unwrap_or(level);
        if let Some(SimPin::Input { level: current }) = self.pins.get_mut(&pin) {
            *current = level;
            self.write_pins_file();
        }
    }

    fn take_edges(&mut self, out: &mut Vec<Edge>) -> Result<(), Error> {
        self.read_wire();
        out.extend(self.queued.drain(..));
        Ok(())
    }

    fn simulate(&mut self, pin: Pin, level: Level) -> Result<(), Error> {
        match self.pins.get_mut(&pin) {
            Some(SimPin::Input { level: current }) => {
                if *current != level {
                    *current = level;
                    self.queued.push_back(Edge {
                        pin,
                        level,
                        at: monotonic_now(),
                    });
                    self.write_pins_file();
                    if let Some(waker) = &self.waker {
                        waker
                            .wake()
                            .map_err(|e| Error::io("waking the event loop", e))?;
                    }
                }
                Ok(())
            }
            _ => Err(Error::NotClaimed {
                pin,
                what: "as an input",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_change_queues_one_edge_and_same_level_queues_none() {
        let mut sim = SimBackend::new();
        sim.claim_input(5, Bias::PullUp).expect("claim");
        sim.simulate(5, Level::High).expect("same level");
        sim.simulate(5, Level::Low).expect("change");
        let mut edges = Vec::new();
        sim.take_edges(&mut edges).expect("take");
        assert_eq!(edges.len(), 1);
        assert_eq!((edges[0].pin, edges[0].level), (5, Level::Low));
        assert_eq!(sim.read(5).expect("read"), Level::Low);
    }

    #[test]
    fn output_starts_at_initial_level_and_records_writes() {
        let mut sim = SimBackend::new();
        sim.claim_output(7, Level::High).expect("claim");
        assert_eq!(sim.output_level(7), Some(Level::High));
        sim.write(7, Level::Low).expect("write");
        assert_eq!(sim.output_level(7), Some(Level::Low));
    }

    #[test]
    fn pins_file_mirrors_levels_and_keeps_released_pins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pins.json");
        let mut sim = SimBackend::with_pins_file(Some(path.clone()));
        sim.claim_output(7, Level::Low).expect("claim");
        sim.write(7, Level::High).expect("write");
        let read = || -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("json")
        };
        assert_eq!(read()["7"]["level"], "high");
        sim.write(7, Level::Low).expect("write");
        sim.release(7);
        let pins = read();
        assert_eq!(pins["7"]["level"], "low");
        assert_eq!(pins["7"]["claimed"], false);
    }

    #[test]
    fn inputs_keep_their_level_across_a_restart_through_the_pins_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pins.json");
        let mut first = SimBackend::with_pins_file(Some(path.clone()));
        first.claim_input(16, Bias::PullUp).expect("claim");
        first.set_rest_level(16, Level::Low);
        first.simulate(16, Level::High).expect("open the door");
        drop(first);
        let mut second = SimBackend::with_pins_file(Some(path));
        second.claim_input(16, Bias::PullUp).expect("claim");
        second.set_rest_level(16, Level::Low);
        assert_eq!(second.read(16).expect("read"), Level::High);
    }

    #[test]
    fn a_pin_cannot_be_claimed_twice_or_simulated_as_output() {
        let mut sim = SimBackend::new();
        sim.claim_output(7, Level::Low).expect("claim");
        assert!(matches!(
            sim.claim_input(7, Bias::Off),
            Err(Error::AlreadyClaimed { pin: 7 })
        ));
        assert!(matches!(
            sim.simulate(7, Level::High),
            Err(Error::NotClaimed { .. })
        ));
    }
}
