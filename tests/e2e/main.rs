//! End-to-end tests: the real `sited` and `sitectl` binaries with the real plugin `.so` files,
//! on the sim backend. Run `cargo build --workspace` first (cargo test does not build the
//! plugin cdylibs). One test binary built from modules keeps link times down.

mod bad_input;
mod commands;
mod crash;
mod devices;
mod exactly_once;
mod exhaustion;
mod faults;
mod heartbeat;
mod lifecycle;
mod paging;
mod plugin_abi;
mod rules;
mod security;
mod sensors;
mod site;
mod status;
mod walkthrough;
