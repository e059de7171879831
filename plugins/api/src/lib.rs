//! The boundary between `sited` and its device plugins.
//!
//! - [`abi`]: the versioned C ABI (`#[repr(C)]` structs, status codes, the query symbol).
//! - [`Device`]: the Rust trait a plugin implements; [`export_plugin!`] turns it into a cdylib
//!   entry point whose every function is wrapped in `catch_unwind`.
//! - [`Host`]: what a device may ask of the daemon; [`FakeHost`] implements it for unit tests.
//! - [`Debouncer`]: the leading-edge debounce the input plugins share.
//!
//! This crate depends on nothing in the daemon.

pub mod abi;
mod debounce;
mod device;
#[doc(hidden)]
pub mod export;
mod fake;
mod host;

pub use debounce::Debouncer;
pub use device::{Device, Role, parse_config, parse_on_off};
pub use fake::{Claim, FakeHost};
pub use host::{Bias, Host, HostError, Level, LogLevel, PwmSpec, VtableHost};
