//! The boundary between `sited` and its device plugins.
//!
//! - [`abi`]: the versioned C ABI (`#[repr(C)]` structs, status codes, the query symbol).
//! - [`Device`]: the Rust trait a plugin implements; [`export_plugin!`] turns it into a cdylib
//!   entry point whose every function is wrapped in `catch_unwind`.
//! - [`Host`]: what a device may ask of the daemon; [`FakeHost`] implements it for unit tests.
//! - [`Debouncer`]: the leading-edge debounce the input plugins share.
//! - [`kit`]: the debounced binary input and the on/off output the plugins are built from.
//!
//! This crate depends on nothing in the daemon.

pub mod abi;
mod debounce;
mod device;
#[doc(hidden)]
pub mod export;
mod fake;
mod host;
pub mod kit;

pub use debounce::Debouncer;
pub use device::{Device, Role, parse_config, parse_on_off};
pub use fake::{Claim, FakeHost, config_json};
pub use host::{Bias, Host, HostError, Level, LogLevel, PwmSpec, VtableHost};
