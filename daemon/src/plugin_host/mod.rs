//! The plugin host: opens device plugins ([`loader`]) and runs device instances through the C
//! ABI ([`instance`]). With `hw/`, the only place with `unsafe`. Knows nothing of the site.

pub mod instance;
pub mod loader;

pub use instance::{CallError, Claim, Instance, TimerOp, validate};
pub use loader::{Libraries, PluginLibrary, file_name};

use std::path::PathBuf;

/// Plugin problems, each naming the file or device and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no plugin for kind \"{kind}\": {path} does not exist (plugins there: {available})", path = path.display())]
    NotFound {
        kind: String,
        path: PathBuf,
        available: String,
    },
    #[error("refusing to load {path}: {reason}; loading a plugin runs its code as sited", path = path.display())]
    Untrusted { path: PathBuf, reason: String },
    #[error("cannot open plugin {path}: {detail}", path = path.display())]
    Open { path: PathBuf, detail: String },
    #[error("{path} is not a sited plugin (it exports no `sited_plugin_query`)", path = path.display())]
    NotAPlugin { path: PathBuf },
    #[error("plugin {path} is incompatible: {detail}", path = path.display())]
    Incompatible { path: PathBuf, detail: String },
    #[error("device \"{device}\": {message}")]
    Refused { device: String, message: String },
    #[error("device \"{device}\": {message}")]
    Panicked { device: String, message: String },
}
