//! The command line of `sitectl`: what a user can type, and the help that tells them what it
//! does and what to watch out for. Parsing only; `lib.rs` carries the commands out.

use clap::{Parser, Subcommand};
use site_proto::DEFAULT_SOCKET;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The exit-status table, shared by the top-level help and its test.
macro_rules! exit_status_help {
    () => {
        "\
Exit status:
  0  success
  1  sited refused or failed the request (the reason is printed on stderr);
     for `validate`: the config file is invalid
  2  usage error; or sitectl could not reach sited, got no valid answer in
     time, or could not run sited for `validate`"
    };
}

const MAIN_AFTER_HELP: &str = concat!(
    exit_status_help!(),
    "\n\n\
Notes:
  - The socket is taken from -s, else $SITED_SOCKET, else /run/sited/control.sock.
  - `status`, `log`, `devices` and `version` need only access to the socket (mode 0660: root,
    sited's user or the socket's group). `sim`, `set`, `send`, `reload`, `count reset` and `key`
    operate, and also need root, sited's own user, or the operator group named in sited.toml
    (`operator-group`); anyone else is refused with exit status 1.
  - A request that timed out (exit status 2) may still have been carried out.
  - Scripts should use `status --json`; the table's layout may change."
);

const STATUS_AFTER_HELP: &str = "\
Columns: NAME KIND PIN ROLE STATE DETAIL, one device per line, sorted by name.
DETAIL lists what the device's plugin publishes, as key=value. A faulted device
shows STATE FAULTED and the fault as DETAIL.

Notes:
  - With the sim backend the header says \"backend: sim (simulated pins)\":
    nothing on the board is read or driven; inputs change only by `sitectl sim`.
  - A faulted device is held in its safe state until `sitectl reload` or a
    restart re-creates it.
  - --json prints sited's status result as one JSON object on one line. It holds
    everything sited reports, including parts this sitectl does not show; use it
    in scripts.";

const SIM_AFTER_HELP: &str = "\
VALUE is the input's state word: button pressed|released, reed open|closed,
switch on|off.

Notes:
  - Works only when sited runs with the sim backend; otherwise sited refuses
    (exit status 1).
  - The value arrives as if the pin had changed: the plugin debounces it and the
    site logic reacts (pressing the entry button starts a door cycle).
  - Needs operator rights (root, sited's user, or the operator group).";

const SET_AFTER_HELP: &str = "\
VALUE is the output's state word: led, relay, siren on|off; servo open|closed.

Notes:
  - The site logic keeps running and may change the output again at its next
    event (a door cycle closes the door it opened).
  - Needs operator rights (root, sited's user, or the operator group).";

const RELOAD_AFTER_HELP: &str = "\
Same as `systemctl reload sited` (SIGHUP): sited re-reads the config file it was
started with. Devices whose table is unchanged keep running; changed and faulted
ones are re-created.

Notes:
  - If the new file is invalid, sited keeps the running config, says why, and
    sitectl exits 1. Check a file beforehand with `sitectl validate -c FILE`.
  - Needs operator rights (root, sited's user, or the operator group).";

const LOG_AFTER_HELP: &str = "\
Lines are `YYYY-MM-DD HH:MM:SS, <description>, <staff on premises after it>`, in the
hub's local time, one per staff entry and exit, emergency open and close, and hand reset.

Notes:
  - Only the node that runs the hub ([hub] in sited.toml) keeps the event log; a door
    node refuses (exit status 1).
  - --follow reads through the control socket, not the file: lines appear once they are
    on disk. It runs until interrupted; if sited stops, sitectl says so and exits 2.
  - The file itself is [hub] event-log (default /var/log/sited/events.log).";

const SEND_AFTER_HELP: &str = "\
sited writes COMMAND (its words joined by spaces) to the device as one line, waits for the
line it answers with (seed devices say `ACK Command Executed`), and prints it.

Notes:
  - Commands to one device go one at a time: a second waits for the first's answer.
  - No answer within --timeout (default 5 s) is exit status 1; an answer that comes later
    is ignored, not taken for the next command's.
  - `sitectl send <device> quit` closes that device's connection.
  - Needs operator rights (root, sited's user, or the operator group).";

const DEVICES_AFTER_HELP: &str = "\
Columns: NAME VIA TYPE ADDRESS LAST-SEEN DETAIL. VIA is tcp for devices that registered with
DEVICE <name> TYPE <type> (site modules and IoT devices) and udp for sensors streaming
readings; DETAIL is a TCP device's connection time or a stream's packet counts.

Notes:
  - Only the node that runs the hub ([hub] in sited.toml) has devices to list.
  - LAST-SEEN is the hub's local time of the last message or packet.";

const COUNT_AFTER_HELP: &str = "\
The count goes up on each staff entry and down on each exit at the access-control doors;
`sitectl status` shows it as `staff on premises: N`.

Notes:
  - Only the node that runs the hub ([hub] in sited.toml) keeps the count.
  - See `sitectl count reset --help` before resetting it.";

const COUNT_RESET_AFTER_HELP: &str = "\
Prints `staff count reset to 0 (was N)`.

Notes:
  - Writes an event-log line saying the count was reset by hand (with your uid), so
    `sitectl log` shows it; use it after a roll call, not to hide an anomaly.
  - Only the node that runs the hub keeps the count; a door node refuses (exit status 1).
  - Needs operator rights (root, sited's user, or the operator group).";

const KEY_AFTER_HELP: &str = "\
Keys let clients prove who they are at the hub (CHAL, then AUTH; see PROTOCOL.md), and
their role says what they may do:
  sensor    send readings
  actuator  also register a DEVICE, take commands and answer them
  node      also report staff entries, exits and emergencies (door nodes)

Notes:
  - `key add` prints the new secret once, on a line of its own; sited keeps it in the keys
    file ([hub] keys, default <state-dir>/keys.toml, mode 0600) and shows it to nobody again.
    Put it in the client's secret file (for a door node, [link] secret-file, mode 0600).
  - Changes take effect at once, without a restart. `key remove` drops the connections
    that used the key.
  - Only the node that runs the hub keeps keys. All key commands need operator rights
    (root, sited's user, or the operator group).";

const CERT_AFTER_HELP: &str = "\
Prints the SHA-256 fingerprint of the hub's TLS certificate: 64 hex characters, the value a
door node pins in [link] fingerprint (colons are optional there).

Notes:
  - Only a hub with a TLS listener ([hub] tls) has a certificate.
  - Check the fingerprint on the hub itself, not over the network you are protecting.";

const VERSION_AFTER_HELP: &str = "\
Prints sitectl's version and control-protocol version, then asks sited for its
version, the plugin ABI versions it speaks and its control-protocol version.

Notes:
  - If sited cannot be reached, sitectl's version is still printed, the reason
    follows on stderr, and the exit status is 2.
  - `sitectl --version` prints only sitectl's version and never contacts sited.";

const VALIDATE_AFTER_HELP: &str = "\
Checks FILE as sited checks its config at start (syntax, unknown keys, values,
and each device's keys against its plugin) without a running daemon, by running
`sited --check-config FILE`. Prints what sited prints and exits with its status:
0 valid, 1 invalid.

sited is looked for at $SITED_BIN if set, else next to the sitectl executable,
else on PATH; if it is not found, sitectl exits 2.

Notes:
  - The file is checked by that sited binary: use the sited you will run.
  - sited loads the plugins the file names from its plugin-dir to check their
    keys, so run it where the plugins are installed.
  - Nothing is applied: after editing the live config, run `sitectl reload`.";

/// sitectl: inspect and operate sited, the site controller daemon.
#[derive(Debug, Parser)]
#[command(
    name = "sitectl",
    version,
    arg_required_else_help = true,
    after_help = MAIN_AFTER_HELP
)]
pub struct Cli {
    /// sited's control socket [env: SITED_SOCKET] [default: /run/sited/control.sock]
    // Not clap's `env`: it takes an empty SITED_SOCKET as an empty path instead of unset.
    #[arg(short, long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// How long to wait for sited's answer, in seconds (fractions allowed) [default: 10; for
    /// `send`, how long the device has to answer, default 5]
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How long to wait for sited's answer.
    pub fn answer_timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }

    /// How long a device has to answer `sitectl send`.
    pub fn device_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or(Duration::from_millis(site_proto::DEFAULT_SEND_TIMEOUT_MS))
    }

    /// The socket to use: `-s`, else `sited_socket_env` (`$SITED_SOCKET`) unless empty, else
    /// the default.
    pub fn socket_path(&self, sited_socket_env: Option<OsString>) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                sited_socket_env
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Show the site: staff on the premises, each module and its hub link, the hub's ports and
    /// clients, the writer's health, rules, and every device (state, role, pin, faults)
    #[command(after_help = STATUS_AFTER_HELP)]
    Status {
        /// Print sited's status as one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Drive a simulated input, as if its pin had changed (sim backend only)
    #[command(after_help = SIM_AFTER_HELP)]
    Sim {
        /// The input device's name, as in sited.toml
        device: String,
        /// The state to simulate (pressed, released, open, closed, on, off)
        value: String,
    },
    /// Drive an output device
    #[command(after_help = SET_AFTER_HELP)]
    Set {
        /// The output device's name, as in sited.toml
        device: String,
        /// The state to set (on, off, open, closed)
        value: String,
    },
    /// Make sited re-read its config file
    #[command(after_help = RELOAD_AFTER_HELP)]
    Reload,
    /// Show the event log's last lines (the hub's staff entries, exits and emergencies)
    #[command(after_help = LOG_AFTER_HELP)]
    Log {
        /// How many of the last lines to print (0 with -f: only new ones)
        #[arg(short = 'n', long = "lines", default_value = "20", value_name = "N")]
        lines: usize,
        /// Then keep printing new lines as they are written, until Ctrl-C
        #[arg(short, long)]
        follow: bool,
    },
    /// Send a command to a device registered at the hub and print its answer
    #[command(after_help = SEND_AFTER_HELP)]
    Send {
        /// The device's registered name (DEVICE <name> TYPE ...)
        device: String,
        /// The command, e.g. SET_INTERVAL 3 or ACTIVATE_ALARM; `quit` closes its connection
        #[arg(required = true, num_args = 1.., value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List the devices registered at the hub (TCP) and the sensors streaming to it (UDP)
    #[command(after_help = DEVICES_AFTER_HELP)]
    Devices {
        /// Print sited's list as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Show the latest reading of every sensor that reports to the hub
    Sensors {
        /// Print sited's readings as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// The staff-on-premises counter
    #[command(after_help = COUNT_AFTER_HELP)]
    Count {
        #[command(subcommand)]
        action: CountAction,
    },
    /// Manage the hub's client keys (add, list, remove)
    #[command(after_help = KEY_AFTER_HELP)]
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the fingerprint of the hub's TLS certificate, for door nodes to pin
    #[command(after_help = CERT_AFTER_HELP)]
    Cert {
        /// Print the certificate's details as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Show the versions of sitectl and of the running sited
    #[command(after_help = VERSION_AFTER_HELP)]
    Version {
        /// Print both versions as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Check a config file without a running daemon (runs `sited --check-config`)
    #[command(after_help = VALIDATE_AFTER_HELP)]
    Validate {
        /// The config file to check
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Load the plugins from DIR instead of the file's plugin-dir (passed to sited)
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum KeyAction {
    /// Add a key; prints its new secret, once
    #[command(after_help = KEY_AFTER_HELP)]
    Add {
        /// The key's name: the client's DEVICE name (a node's modules register as NAME-access,
        /// NAME-emergency)
        name: String,
        /// What the client may do: sensor, actuator or node
        #[arg(long, value_parser = ["sensor", "actuator", "node"])]
        role: String,
    },
    /// List the keys: names, roles and connections, never secrets
    #[command(after_help = KEY_AFTER_HELP)]
    List {
        /// Print the list as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove a key and drop the connections that use it
    #[command(after_help = KEY_AFTER_HELP)]
    Remove {
        /// The key's name
        name: String,
    },
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum CountAction {
    /// Set the staff count to 0 (logged as a reset by hand)
    #[command(after_help = COUNT_RESET_AFTER_HELP)]
    Reset,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("the timeout must be more than 0 seconds".to_string());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` seconds is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sitectl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn status_json_parses_with_socket_after_the_subcommand() {
        let cli = parse(&["status", "--json", "-s", "/tmp/x.sock"]).expect("parses");
        assert_eq!(cli.command, Command::Status { json: true });
        assert_eq!(
            cli.socket_path(Some("/env.sock".into())),
            PathBuf::from("/tmp/x.sock")
        );
    }

    #[test]
    fn socket_falls_back_to_env_then_the_well_known_path() {
        let cli = parse(&["status"]).expect("parses");
        assert_eq!(
            cli.socket_path(Some("/env.sock".into())),
            PathBuf::from("/env.sock")
        );
        assert_eq!(cli.socket_path(None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            cli.socket_path(Some(OsString::new())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(cli.answer_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn sim_and_set_take_device_and_value() {
        let cli = parse(&["sim", "entry_button", "pressed"]).expect("parses");
        assert_eq!(
            cli.command,
            Command::Sim {
                device: "entry_button".into(),
                value: "pressed".into()
            }
        );
        let cli = parse(&["--socket", "/s", "set", "office_light", "on"]).expect("parses");
        assert_eq!(
            cli.command,
            Command::Set {
                device: "office_light".into(),
                value: "on".into()
            }
        );
    }

    #[test]
    fn set_without_value_is_a_usage_error() {
        let err = parse(&["set", "office_light"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn validate_requires_config() {
        let err = parse(&["validate"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let cli = parse(&["validate", "-c", "/etc/sited/sited.toml"]).expect("parses");
        assert_eq!(
            cli.command,
            Command::Validate {
                config: PathBuf::from("/etc/sited/sited.toml"),
                plugin_dir: None
            }
        );
        let cli =
            parse(&["validate", "-c", "a.toml", "--plugin-dir", "target/debug"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Validate { plugin_dir: Some(ref d), .. } if d == &PathBuf::from("target/debug")
        ));
    }

    #[test]
    fn timeout_accepts_fractions_and_refuses_zero_and_words() {
        let cli = parse(&["--timeout", "0.25", "reload"]).expect("parses");
        assert_eq!(cli.answer_timeout(), Duration::from_millis(250));
        assert_eq!(cli.command, Command::Reload);
        for bad in ["0", "-1", "soon", "NaN", "1e300"] {
            let arg = format!("--timeout={bad}");
            let err = parse(&[&arg, "reload"]).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn unknown_subcommand_and_no_subcommand_are_usage_errors() {
        assert_eq!(
            parse(&["explode"]).expect_err("must fail").kind(),
            ErrorKind::InvalidSubcommand
        );
        let err = parse(&[]).expect_err("must fail");
        assert_eq!(
            err.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn log_defaults_to_the_last_20_lines_without_following() {
        let cli = parse(&["log"]).expect("parses");
        assert_eq!(
            cli.command,
            Command::Log {
                lines: 20,
                follow: false
            }
        );
    }

    #[test]
    fn log_takes_a_line_count_and_follow_in_short_and_long_form() {
        let short = parse(&["log", "-n", "0", "-f"]).expect("parses");
        let long = parse(&["log", "--lines=0", "--follow"]).expect("parses");
        for cli in [short, long] {
            assert_eq!(
                cli.command,
                Command::Log {
                    lines: 0,
                    follow: true
                }
            );
        }
    }

    #[test]
    fn log_line_count_must_be_a_whole_number() {
        for bad in ["-1", "ten", "2.5"] {
            let arg = format!("--lines={bad}");
            let err = parse(&["log", &arg]).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn count_needs_an_action() {
        let cli = parse(&["count", "reset"]).expect("parses");
        assert_eq!(
            cli.command,
            Command::Count {
                action: CountAction::Reset
            }
        );
        let err = parse(&["count"]).expect_err("must fail");
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["count", "set", "3"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn log_and_count_reset_help_end_with_their_caveats() {
        let mut cmd = Cli::command();
        let log = cmd
            .find_subcommand_mut("log")
            .expect("log")
            .render_help()
            .to_string();
        assert!(log.contains("Only the node that runs the hub"), "{log}");
        assert!(log.contains("exits 2"), "{log}");
        let reset = cmd
            .find_subcommand_mut("count")
            .and_then(|c| c.find_subcommand_mut("reset"))
            .expect("count reset")
            .render_help()
            .to_string();
        assert!(reset.contains("reset by hand"), "{reset}");
        assert!(reset.contains("operator rights"), "{reset}");
    }

    #[test]
    fn top_level_help_documents_exit_status() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains(exit_status_help!()), "{help}");
        assert!(help.contains("--socket"));
        assert!(help.contains("[env: SITED_SOCKET]"));
        assert!(help.contains("--timeout"));
    }
}
