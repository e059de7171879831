//! The control dispatcher: what each `sitectl` request does to the running daemon, and the
//! status document it answers `status` with. The control server (`control.rs`) has already
//! framed the request and checked the peer may make it.

use super::{Daemon, Key, LoopTimer, PendingSim, SIM_SETTLE};
use crate::control::Incoming;
use crate::hub::Hub;
use crate::hub::server::Asker;
use crate::keys::{self, KeyBook, KeySet, Role, Secret};
use crate::timers::monotonic_now;
use site_proto::{DaemonInfo, ErrorKind, Request, Response, Status, VersionInfo};
use std::time::Duration;

/// A `sitectl key` change being written to the keys file: who asked, and what.
pub(in crate::event_loop) struct KeyChange {
    asker: Asker,
    uid: u32,
    what: KeyWhat,
}

enum KeyWhat {
    Added(keys::Key),
    Removed(String),
}

impl Daemon {
    /// Carries out one control request (permission was checked by the control server).
    /// Returns the answer's line; `None`: the answer comes later (`sitectl send`, a `sim`
    /// inside a debounce lockout). The long answers (the pages) are encoded straight from
    /// their types, never built as a `serde_json::Value`.
    pub(super) fn handle(&mut self, incoming: &Incoming) -> Option<Vec<u8>> {
        let response = match &incoming.request {
            // Through a `Value`, whose keys are sorted: the wire form stays what it was (status
            // is a summary of a few dozen entries, so the detour costs little).
            Request::Status {} => Response::ok(self.status()),
            Request::Version {} => Response::ok(VersionInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                plugin_abi: site_plugin_api::abi::SUPPORTED_ABI_VERSIONS.to_vec(),
                protocol: site_proto::PROTOCOL_VERSION,
            }),
            Request::Set { device, value } => {
                log::info!("control: uid {} sets {device} {value}", incoming.peer.uid);
                let result =
                    self.devices
                        .command(device, value, self.hw.as_mut(), &mut self.events);
                self.on_device_events();
                match result {
                    Ok(()) => Response::ok(self.device_result(device)),
                    Err(e) => Response::err(e.kind, e.message),
                }
            }
            Request::Sim { device, value } => {
                log::info!(
                    "control: uid {} simulates {device} {value}",
                    incoming.peer.uid
                );
                let before = self.device_state(device);
                match self.devices.simulate(device, value, self.hw.as_mut()) {
                    Ok(()) => {
                        // Deliver the edge now, so the reply (and the next status) shows its effect.
                        self.on_hardware();
                        let now = self.device_state(device);
                        if now.eq_ignore_ascii_case(value) || now != before {
                            Response::ok(self.device_result(device))
                        } else {
                            // Inside the debounce lockout: answer when it has been applied.
                            let deadline = monotonic_now() + SIM_SETTLE;
                            self.pending_sims.push(PendingSim {
                                asker: Asker {
                                    conn: incoming.conn,
                                    generation: incoming.generation,
                                },
                                device: device.clone(),
                                value: value.clone(),
                                before,
                                deadline,
                            });
                            if self
                                .timers
                                .deadline_of(&Key::Loop(LoopTimer::SimSettled))
                                .is_none()
                            {
                                self.timers.arm(Key::Loop(LoopTimer::SimSettled), deadline);
                            }
                            return None;
                        }
                    }
                    Err(e) => Response::err(e.kind, e.message),
                }
            }
            Request::Reload {} => {
                log::info!("control: uid {} asked for a reload", incoming.peer.uid);
                // As SIGHUP does: `systemctl reload` runs `sitectl reload`, and logrotate
                // may have moved the logs.
                self.runner.reopen_log();
                match self.reload() {
                    Ok(()) => Response::ok(serde_json::json!({ "reloaded": self.config.file })),
                    Err(message) => Response::err(ErrorKind::Failed, message),
                }
            }
            Request::Log { lines, follow } => match self.runner.log_tail(*lines) {
                Ok(tail) => {
                    if *follow {
                        self.control.follow(incoming.conn);
                    }
                    Response::ok(serde_json::json!({ "lines": tail }))
                }
                Err(message) => Response::err(ErrorKind::Rejected, message),
            },
            Request::Send {
                device,
                command,
                timeout_ms,
            } => {
                log::info!(
                    "control: uid {} sends {device} {command:?}",
                    incoming.peer.uid
                );
                if command.is_empty() || command.len() > 256 || command.contains(['\n', '\r']) {
                    return Some(site_proto::encode(&Response::err(
                        ErrorKind::BadRequest,
                        "a command is one line of at most 256 bytes",
                    )));
                }
                let asker = Asker {
                    conn: incoming.conn,
                    generation: incoming.generation,
                };
                let timeout = Duration::from_millis((*timeout_ms).clamp(1, 600_000));
                let Some(hub) = &mut self.hub else {
                    return Some(site_proto::encode(&Response::err(
                        ErrorKind::Rejected,
                        "this node runs no hub, so no devices are connected to it",
                    )));
                };
                match hub.send(device, command, timeout, asker, self.poll.registry()) {
                    // The answer comes when the device replies or the timeout passes.
                    Ok(()) => return None,
                    Err(message) => Response::err(ErrorKind::Rejected, message),
                }
            }
            Request::Devices { after, limit } => match &self.hub {
                Some(hub) => match hub.devices(after.as_deref(), *limit) {
                    Ok(page) => return Some(site_proto::encode_ok(&page)),
                    Err(message) => Response::err(ErrorKind::Rejected, message),
                },
                None => Response::err(
                    ErrorKind::Rejected,
                    "this node runs no hub, so no devices report to it",
                ),
            },
            Request::Sensors { after, limit } => match &self.hub {
                Some(hub) => {
                    return Some(site_proto::encode_ok(
                        &hub.sensors_page(after.as_deref(), *limit),
                    ));
                }
                None => Response::err(
                    ErrorKind::Rejected,
                    "this node runs no hub, so no sensors report to it",
                ),
            },
            Request::KeyAdd { name, role } => match self.key_add(incoming, name, role) {
                Ok(()) => return None,
                Err(response) => response,
            },
            Request::KeyRemove { name } => match self.key_remove(incoming, name) {
                Ok(()) => return None,
                Err(response) => response,
            },
            Request::KeyList {} => match &self.hub {
                Some(hub) => {
                    let connections = hub.connections_by_key();
                    let keys = hub
                        .keys()
                        .file_keys()
                        .values()
                        .map(|k| site_proto::KeyInfo {
                            connections: connections.get(&k.name).copied().unwrap_or(0),
                            name: k.name.clone(),
                            role: k.role.to_string(),
                        })
                        .collect();
                    return Some(site_proto::encode_ok(&site_proto::KeyList { keys }));
                }
                None => no_hub_keys(),
            },
            Request::Cert {} => match self.hub.as_ref().map(Hub::cert) {
                Some(Some(cert)) => return Some(site_proto::encode_ok(&cert)),
                Some(None) => Response::err(
                    ErrorKind::Rejected,
                    "this hub has no TLS listener: set [hub] tls = \"address:port\"",
                ),
                None => Response::err(
                    ErrorKind::Rejected,
                    "this node runs no hub, so it has no certificate (ask the hub's sited)",
                ),
            },
            Request::CountReset {} => {
                let was = match self.hub {
                    Some(_) => self.runner.reset_count(incoming.peer.uid),
                    None => None,
                };
                match was {
                    Some(was) => Response::ok(serde_json::json!({ "staff": 0, "was": was })),
                    None => Response::err(
                        ErrorKind::Rejected,
                        "this node runs no hub, so it keeps no staff count",
                    ),
                }
            }
        };
        Some(site_proto::encode(&response))
    }

    /// `sitectl key add`: a new secret from the OS generator, written to the keys file; the
    /// answer (with the secret, shown this once) goes out when it is on disk.
    fn key_add(&mut self, incoming: &Incoming, name: &str, role: &str) -> Result<(), Response> {
        let Some(book) = &mut self.keys else {
            return Err(no_hub_keys());
        };
        if !keys::valid_key_name(name) {
            return Err(Response::err(
                ErrorKind::BadRequest,
                format!(
                    "\"{name}\" is not a key name (a letter, then letters, digits, `_` or `-`, at most 48 characters)"
                ),
            ));
        }
        let role = Role::parse(role).ok_or_else(|| {
            Response::err(
                ErrorKind::BadRequest,
                format!("role \"{role}\" is not sensor, actuator or node"),
            )
        })?;
        if book.busy() {
            return Err(key_busy());
        }
        let current = on_disk(book)?;
        if current.contains_key(name) {
            return Err(Response::err(
                ErrorKind::Rejected,
                format!(
                    "a key named {name} exists; to give it a new secret, remove it first (sitectl key remove {name})"
                ),
            ));
        }
        let secret = Secret::generate().map_err(|e| {
            Response::err(
                ErrorKind::Failed,
                format!("the OS random generator failed: {e}"),
            )
        })?;
        let key = keys::Key {
            name: name.to_string(),
            role,
            secret,
        };
        let mut next = current;
        next.insert(name.to_string(), key.clone());
        book.change(
            next,
            KeyChange {
                asker: asker_of(incoming),
                uid: incoming.peer.uid,
                what: KeyWhat::Added(key),
            },
        );
        Ok(())
    }

    /// `sitectl key remove`: the key leaves the file, and once that is on disk, its
    /// clients' connections are dropped.
    fn key_remove(&mut self, incoming: &Incoming, name: &str) -> Result<(), Response> {
        let Some(book) = &mut self.keys else {
            return Err(no_hub_keys());
        };
        if book.busy() {
            return Err(key_busy());
        }
        let mut next = on_disk(book)?;
        if next.remove(name).is_none() {
            return Err(Response::err(
                ErrorKind::NotFound,
                format!("no key named \"{name}\" (see sitectl key list)"),
            ));
        }
        book.change(
            next,
            KeyChange {
                asker: asker_of(incoming),
                uid: incoming.peer.uid,
                what: KeyWhat::Removed(name.to_string()),
            },
        );
        Ok(())
    }

    /// A `sitectl key` change reached the disk (or failed): the hub takes the keys at once,
    /// and the operator gets the answer.
    pub(super) fn on_keys_written(&mut self) {
        let Some((change, result)) = self.keys.as_mut().and_then(KeyBook::finished) else {
            return;
        };
        let response = match result {
            Ok(file_keys) => {
                let dropped = self.set_hub_keys(file_keys);
                match change.what {
                    KeyWhat::Added(key) => {
                        log::info!(
                            "control: uid {} added hub key {} ({})",
                            change.uid,
                            key.name,
                            key.role
                        );
                        Response::ok(site_proto::KeyAdded {
                            name: key.name,
                            role: key.role.to_string(),
                            secret: key.secret.to_hex(),
                        })
                    }
                    KeyWhat::Removed(name) => {
                        log::info!(
                            "control: uid {} removed hub key {name}; {dropped} connection(s) dropped",
                            change.uid
                        );
                        Response::ok(site_proto::KeyRemoved {
                            dropped,
                            removed: name,
                        })
                    }
                }
            }
            Err(message) => {
                log::error!("control: {message}");
                Response::err(ErrorKind::Failed, message)
            }
        };
        self.control.respond_later(
            change.asker.conn,
            change.asker.generation,
            &response,
            self.poll.registry(),
        );
    }

    /// The hub authenticates with `file_keys` (and the daemon's own key) from now on;
    /// returns how many connections that dropped.
    fn set_hub_keys(&mut self, file_keys: KeyMap) -> usize {
        let own = self.own_hub.as_ref().map(|o| o.key.clone());
        match &mut self.hub {
            Some(hub) => hub.set_keys(KeySet::new(file_keys, own), self.poll.registry()),
            None => 0,
        }
    }

    /// At a reload, before anything is applied: the keys file read again (hand edits take
    /// effect), or why the reload fails. `None`: this node has no hub.
    pub(super) fn load_keys_for_reload(&self) -> Result<Option<KeyMap>, String> {
        let Some(book) = &self.keys else {
            return Ok(None);
        };
        if book.busy() {
            return Err("a sitectl key change is being written; reload again in a moment".into());
        }
        keys::load(&book.path).map(Some)
    }

    /// At the end of a reload that worked: the keys read at its start take effect.
    pub(super) fn apply_reloaded_keys(&mut self, file_keys: Option<KeyMap>) {
        let (Some(book), Some(file_keys)) = (&mut self.keys, file_keys) else {
            return;
        };
        if file_keys != book.keys {
            log::info!(
                "hub: {} key(s) in {} after the reload",
                file_keys.len(),
                book.path.display()
            );
        }
        book.keys = file_keys.clone();
        self.set_hub_keys(file_keys);
    }

    /// A device's state word now ("" if it has none).
    fn device_state(&self, device: &str) -> String {
        self.devices
            .status()
            .remove(device)
            .map(|s| s.state)
            .unwrap_or_default()
    }

    /// Answers the `sim` requests whose input has taken its new state, or whose time is up.
    pub(super) fn settle_sims(&mut self) {
        if self.pending_sims.is_empty() {
            return;
        }
        let now = monotonic_now();
        let pending = std::mem::take(&mut self.pending_sims);
        for sim in pending {
            let state = self.device_state(&sim.device);
            let response = if state.eq_ignore_ascii_case(&sim.value) || state != sim.before {
                Response::ok(self.device_result(&sim.device))
            } else if now >= sim.deadline {
                Response::err(
                    ErrorKind::Failed,
                    format!(
                        "{} is still {state} {:.1} s after simulating {}",
                        sim.device,
                        SIM_SETTLE.as_secs_f64(),
                        sim.value
                    ),
                )
            } else {
                self.pending_sims.push(sim);
                continue;
            };
            self.control.respond_later(
                sim.asker.conn,
                sim.asker.generation,
                &response,
                self.poll.registry(),
            );
        }
        if let Some(next) = self.pending_sims.iter().map(|s| s.deadline).min() {
            self.timers.arm(Key::Loop(LoopTimer::SimSettled), next);
        }
    }

    fn device_result(&self, device: &str) -> serde_json::Value {
        match self.devices.status().remove(device) {
            Some(status) => {
                serde_json::json!({ "device": device, "state": status.state, "detail": status.detail })
            }
            None => serde_json::Value::Null,
        }
    }

    fn status(&self) -> Status {
        let site = self.runner.status();
        Status {
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                backend: self.hw.name().to_string(),
                board: Some(site_proto::BoardInfo {
                    model: self.board.model.clone(),
                    read: self
                        .board
                        .read
                        .iter()
                        .map(|(file, said)| site_proto::BoardSource {
                            file: file.clone(),
                            said: said.clone(),
                        })
                        .collect(),
                }),
                config: self.config.file.display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
            },
            devices: self.devices.status(),
            // The count is the hub's: a door node has a ledger (its outboxes) but no count.
            staff: self.hub.as_ref().and(self.runner.staff()),
            site: Some(site).filter(|s| !s.is_empty()),
            hub: self.hub.as_ref().map(Hub::status),
            sensors: self.hub.as_ref().map(Hub::sensors),
            sensor_count: self.hub.as_ref().map(Hub::sensor_count),
            store: self.runner.store(),
        }
    }
}

fn asker_of(incoming: &Incoming) -> Asker {
    Asker {
        conn: incoming.conn,
        generation: incoming.generation,
    }
}

fn no_hub_keys() -> Response {
    Response::err(
        ErrorKind::Rejected,
        "this node runs no hub, so it keeps no keys (ask the hub's sited)",
    )
}

fn key_busy() -> Response {
    Response::err(
        ErrorKind::Rejected,
        "another key change is being written; try again in a moment",
    )
}

type KeyMap = std::collections::BTreeMap<String, keys::Key>;

/// The keys file as it is on disk now: a change starts from it, so a hand edit made since
/// the last reload is kept, not overwritten (a small read; the write goes to its thread).
fn on_disk(book: &KeyBook<KeyChange>) -> Result<KeyMap, Response> {
    keys::load(&book.path).map_err(|e| Response::err(ErrorKind::Failed, e))
}
