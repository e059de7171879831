//! `sited`'s command line, in the library so the package's man page and shell completions are
//! generated from the same definition (`packaging/gen`).

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sited",
    version,
    about = "Site controller daemon: doors, access control, hub",
    after_help = "Environment:\n  SITED_LOG=stderr|journal|syslog  where messages go (default: the journal under systemd,\n                                   stderr anywhere else)\n  SITED_LOG_LEVEL=error|warn|info|debug  how much (default info; debug adds every datagram)"
)]
pub struct Args {
    /// The config file to run with.
    #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Check a config file (plugins included) and exit: 0 valid, 1 invalid.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// With --check-config: load plugins from DIR instead of the file's plugin-dir (to check a
    /// config meant for another machine against a build's plugins).
    #[arg(long, value_name = "DIR", requires = "check_config")]
    pub plugin_dir: Option<PathBuf>,
}
