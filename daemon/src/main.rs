//! `sited`: the site controller daemon. Runs in the foreground (systemd style: no forking, no
//! pid file). All the work is in the library; this file only reads the command line.

use clap::Parser;
use site_daemon::cli::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match site_daemon::devices::check_config(&path, args.plugin_dir.as_deref()) {
            Ok(config) => {
                println!("{}: OK ({} devices)", path.display(), config.devices.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sited: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let sink = site_daemon::logging::init();
    match site_daemon::event_loop::Daemon::start(&args.config).and_then(|d| {
        // Absolute and without `..`, so it can be used from any directory.
        let socket = d
            .control_socket()
            .parent()
            .and_then(|dir| dir.canonicalize().ok())
            .zip(d.control_socket().file_name())
            .map(|(dir, name)| dir.join(name))
            .unwrap_or_else(|| d.control_socket().to_path_buf());
        eprintln!("sited: control socket at {}", socket.display());
        if sink == site_daemon::logging::Sink::Terminal {
            // What a person at a terminal pastes into another one, from any directory.
            let bin_dir = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf));
            match bin_dir {
                Some(dir) => eprintln!(
                    "sited: in another terminal: export SITED_SOCKET={} PATH={}:$PATH",
                    socket.display(),
                    dir.display()
                ),
                None => eprintln!(
                    "sited: in another terminal: export SITED_SOCKET={}",
                    socket.display()
                ),
            }
        }
        d.run()
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: on stderr where the log goes there anyway (a terminal, the journal),
            // through syslog otherwise.
            if sink == site_daemon::logging::Sink::Syslog {
                log::error!("{e}");
            } else {
                eprintln!("sited: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
