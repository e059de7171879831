//! sitectl, the command-line client of sited: parses the command line, asks the daemon over its
//! control socket (or, for `validate`, runs the daemon binary), prints the answer, and decides
//! the exit status. [`run`] is the whole program, callable from tests with in-memory output.

pub mod cli;
pub mod client;
pub mod render;
pub mod validate;

use clap::Parser;
use cli::{Cli, Command, CountAction, KeyAction};
use client::Client;
use serde_json::{Value, json};
use site_proto::{PROTOCOL_VERSION, Request, Response, VersionInfo};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The request was carried out (or `validate`: the file is valid).
pub const EXIT_OK: u8 = 0;
/// sited refused or failed the request (or `validate`: the file is invalid).
pub const EXIT_REFUSED: u8 = 1;
/// Usage error, or no valid answer from sited, or sited could not be run for `validate`.
pub const EXIT_TROUBLE: u8 = 2;

/// What sitectl reads from its process environment; a test makes one up instead.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `$SITED_SOCKET`: the socket when `-s` is not given.
    pub sited_socket: Option<OsString>,
    /// `$SITED_BIN`: the sited that `validate` runs.
    pub sited_bin: Option<OsString>,
    /// The running sitectl executable; `validate` looks for sited beside it.
    pub current_exe: Option<PathBuf>,
    /// `$PATH`, where `validate` looks for sited last.
    pub path: Option<OsString>,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment {
            sited_socket: std::env::var_os("SITED_SOCKET"),
            sited_bin: std::env::var_os("SITED_BIN"),
            current_exe: std::env::current_exe().ok(),
            path: std::env::var_os("PATH"),
        }
    }
}

/// Why a command did not end in success, and so what to print and how to exit.
#[derive(Debug)]
enum Failure {
    /// sited answered with an error: exit 1.
    Refused(String),
    /// sitectl could not get a valid answer: exit 2.
    Trouble(String),
    /// Writing to stdout failed; a closed pipe is not an error.
    Output(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// Runs sitectl with `args` (program name first) and returns its exit status.
pub fn run<I, T>(args: I, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with(&Environment::from_process(), args, stdout, stderr)
}

/// As [`run`], with the environment given rather than read from the process.
pub fn run_with<I, T>(
    env: &Environment,
    args: I,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come here too, with exit status 0 and stdout.
            let out: &mut dyn Write = if e.use_stderr() { stderr } else { stdout };
            let _ = out
                .write_all(e.render().to_string().as_bytes())
                .and_then(|()| out.flush());
            return u8::try_from(e.exit_code()).unwrap_or(EXIT_TROUBLE);
        }
    };
    let outcome = execute(&cli, env, stdout, stderr)
        .and_then(|code| stdout.flush().map(|()| code).map_err(Failure::Output));
    match outcome {
        Ok(code) => code,
        Err(Failure::Refused(reason)) => {
            say(stderr, &reason);
            EXIT_REFUSED
        }
        Err(Failure::Trouble(reason)) => {
            say(stderr, &reason);
            EXIT_TROUBLE
        }
        // `sitectl status | head -1`: the reader has all it wanted.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(Failure::Output(e)) => {
            say(
                stderr,
                &format!("cannot write output: {}", client::describe(&e)),
            );
            EXIT_TROUBLE
        }
    }
}

fn say(stderr: &mut dyn Write, reason: &str) {
    let _ = writeln!(stderr, "sitectl: {}", render::one_line(reason));
    let _ = stderr.flush();
}

fn execute(
    cli: &Cli,
    env: &Environment,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<u8, Failure> {
    let socket = cli.socket_path(env.sited_socket.clone());
    let timeout = match &cli.command {
        // sited answers once the device has: allow for the device's time and then some.
        Command::Send { .. } => cli.device_timeout() + Duration::from_secs(5),
        _ => cli.answer_timeout(),
    };
    let client = Client::new(socket, timeout);
    match &cli.command {
        Command::Status { json } => {
            let result = ask(&client, &Request::Status {})?;
            if *json {
                serde_json::to_writer(&mut *stdout, &result).map_err(io::Error::from)?;
                writeln!(stdout)?;
            } else {
                let text = render::status(&result).map_err(|e| {
                    Failure::Trouble(format!(
                        "cannot understand sited's status: {e} (try --json)"
                    ))
                })?;
                stdout.write_all(text.as_bytes())?;
            }
        }
        Command::Sim { device, value } => {
            let request = Request::Sim {
                device: device.clone(),
                value: value.clone(),
            };
            let result = ask(&client, &request)?;
            confirm(stdout, device, value, &result)?;
        }
        Command::Set { device, value } => {
            let request = Request::Set {
                device: device.clone(),
                value: value.clone(),
            };
            let result = ask(&client, &request)?;
            confirm(stdout, device, value, &result)?;
        }
        Command::Reload => {
            ask(&client, &Request::Reload {})?;
        }
        Command::Log { lines, follow } => return log(&client, *lines, *follow, stdout),
        Command::Send { device, command } => {
            let request = Request::Send {
                device: device.clone(),
                command: command.join(" "),
                timeout_ms: cli.device_timeout().as_millis() as u64,
            };
            let result = ask(&client, &request)?;
            match result.get("reply").and_then(Value::as_str) {
                Some(reply) => writeln!(stdout, "{}", render::one_line(reply))?,
                None => writeln!(stdout, "{}: connection closed", render::one_line(device))?,
            }
        }
        Command::Devices { json } => {
            let mut rejected = None;
            let list = all_pages_with(
                &client,
                "devices",
                |after| Request::Devices { after, limit: None },
                |page| {
                    if let Some(r) = page.get_mut("rejected").map(Value::take) {
                        rejected.get_or_insert(r);
                    }
                },
            )?;
            let mut result = serde_json::json!({ "devices": list });
            if let Some(rejected) = rejected {
                result["rejected"] = rejected;
            }
            if *json {
                serde_json::to_writer(&mut *stdout, &result).map_err(io::Error::from)?;
                writeln!(stdout)?;
            } else {
                stdout.write_all(render::devices(&result).as_bytes())?;
            }
        }
        Command::Sensors { json } => {
            let pages = all_pages(&client, "sensors", |after| Request::Sensors {
                after,
                limit: None,
            })?;
            // Each page is a map of devices; the pages come in name order.
            let mut sensors = serde_json::Map::new();
            for page in pages {
                if let Value::Object(map) = page {
                    sensors.extend(map);
                }
            }
            let result = serde_json::json!({ "sensors": sensors });
            if *json {
                serde_json::to_writer(&mut *stdout, &result).map_err(io::Error::from)?;
                writeln!(stdout)?;
            } else {
                stdout.write_all(render::sensors(&result).as_bytes())?;
            }
        }
        Command::Count {
            action: CountAction::Reset,
        } => {
            let result = ask(&client, &Request::CountReset {})?;
            let now = result.get("staff").and_then(Value::as_u64).unwrap_or(0);
            // Without `was`, say nothing rather than a made-up "was 0".
            match result.get("was").and_then(Value::as_u64) {
                Some(was) => writeln!(stdout, "staff count reset to {now} (was {was})")?,
                None => writeln!(stdout, "staff count reset to {now}")?,
            }
        }
        Command::Key { action } => key(&client, action, stdout, stderr)?,
        Command::Cert { json } => {
            let result = ask(&client, &Request::Cert {})?;
            if *json {
                serde_json::to_writer(&mut *stdout, &result).map_err(io::Error::from)?;
                writeln!(stdout)?;
            } else {
                let fingerprint = result
                    .get("fingerprint")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Failure::Trouble("sited sent no fingerprint".into()))?;
                writeln!(stdout, "{}", render::one_line(fingerprint))?;
            }
        }
        Command::Version { json } => return version(&client, *json, stdout),
        Command::Validate { config, plugin_dir } => {
            let sited = validate::find_sited(env).map_err(Failure::Trouble)?;
            let outcome =
                validate::check(&sited, config, plugin_dir.as_deref()).map_err(Failure::Trouble)?;
            stdout.write_all(&outcome.stdout)?;
            stdout.flush()?;
            let _ = stderr.write_all(&outcome.stderr);
            if let Some(hint) = validate::plugin_hint(&outcome, plugin_dir.as_deref(), &sited) {
                let _ = writeln!(stderr, "{hint}");
            }
            return Ok(outcome.code);
        }
    }
    Ok(EXIT_OK)
}

/// `key add|list|remove`. `add` prints the secret alone on stdout (so a script can take it
/// with `$(...)`), and what to do with it on stderr.
fn key(
    client: &Client,
    action: &KeyAction,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<(), Failure> {
    match action {
        KeyAction::Add { name, role } => {
            let request = Request::KeyAdd {
                name: name.clone(),
                role: role.clone(),
            };
            let result = ask(client, &request)?;
            let added: site_proto::KeyAdded = serde_json::from_value(result)
                .map_err(|e| Failure::Trouble(format!("cannot understand sited's answer: {e}")))?;
            writeln!(stdout, "{}", added.secret)?;
            stdout.flush()?;
            let _ = writeln!(
                stderr,
                "sitectl: key {} ({}) added; the secret above is shown only this once: put it in the client's secret file (mode 0600)",
                render::one_line(&added.name),
                render::one_line(&added.role)
            );
        }
        KeyAction::List { json } => {
            let result = ask(client, &Request::KeyList {})?;
            if *json {
                serde_json::to_writer(&mut *stdout, &result).map_err(io::Error::from)?;
                writeln!(stdout)?;
            } else {
                let list: site_proto::KeyList = serde_json::from_value(result).map_err(|e| {
                    Failure::Trouble(format!(
                        "cannot understand sited's answer: {e} (try --json)"
                    ))
                })?;
                stdout.write_all(render::keys(&list).as_bytes())?;
            }
        }
        KeyAction::Remove { name } => {
            let result = ask(client, &Request::KeyRemove { name: name.clone() })?;
            let dropped = result.get("dropped").and_then(Value::as_u64).unwrap_or(0);
            writeln!(
                stdout,
                "key {} removed; {dropped} connection(s) dropped",
                render::one_line(name)
            )?;
        }
    }
    Ok(())
}

/// `log [-n N] [-f]`: the tail, then (following) every line sited pushes until it hangs up.
fn log(client: &Client, lines: usize, follow: bool, stdout: &mut dyn Write) -> Result<u8, Failure> {
    let request = Request::Log { lines, follow };
    let (first, mut session) = client
        .open(&request)
        .map_err(|e| Failure::Trouble(e.to_string()))?;
    let result = match first {
        Response::Ok { result } => result,
        Response::Err { error, .. } => return Err(Failure::Refused(error)),
    };
    for line in result
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        writeln!(stdout, "{}", log_line(line))?;
    }
    stdout.flush()?;
    if !follow {
        return Ok(EXIT_OK);
    }
    loop {
        match session.next_pushed() {
            Ok(Response::Ok { result }) => {
                // A pushed answer without a line is something a newer sited says; skip it.
                if let Some(line) = result.get("line") {
                    writeln!(stdout, "{}", log_line(line))?;
                    // Per line: `sitectl log -f | grep` must see each event as it happens.
                    stdout.flush()?;
                }
            }
            Ok(Response::Err { error, .. }) => return Err(Failure::Refused(error)),
            Err(client::Error::Closed) => {
                return Err(Failure::Trouble("sited closed the connection".into()));
            }
            Err(e) => return Err(Failure::Trouble(e.to_string())),
        }
    }
}

/// An event-log line as sited sent it; only control characters are escaped, so a line cannot
/// drive the terminal. Anything but a string is shown as JSON rather than dropped.
fn log_line(line: &Value) -> String {
    match line {
        Value::String(s) => render::one_line(s),
        other => render::one_line(&other.to_string()),
    }
}

/// One request, its result or the reason there is none.
/// Every page of a paged list (`devices`, `sensors`): asks for the next page until sited says
/// there is none (a sited from before paging answers with one page holding everything). For
/// `devices` the entries of all pages in one list; for `sensors` each page's map.
fn all_pages(
    client: &Client,
    key: &str,
    request: impl Fn(Option<String>) -> Request,
) -> Result<Vec<Value>, Failure> {
    all_pages_with(client, key, request, |_| {})
}

/// [`all_pages`], showing each page's whole result to `each` first (for what only the first
/// page carries).
fn all_pages_with(
    client: &Client,
    key: &str,
    request: impl Fn(Option<String>) -> Request,
    mut each: impl FnMut(&mut Value),
) -> Result<Vec<Value>, Failure> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let mut result = ask(client, &request(after.take()))?;
        each(&mut result);
        match result.get_mut(key).map(Value::take) {
            Some(Value::Array(page)) => items.extend(page),
            Some(page) => items.push(page),
            None => {}
        }
        match result.get("next").and_then(Value::as_str) {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(items),
        }
    }
}

fn ask(client: &Client, request: &Request) -> Result<Value, Failure> {
    match client.call(request) {
        Ok(Response::Ok { result }) => Ok(result),
        Ok(Response::Err { error, .. }) => Err(Failure::Refused(error)),
        Err(e) => Err(Failure::Trouble(e.to_string())),
    }
}

/// `entry_button: pressed`, with the state sited reports if it reports one.
fn confirm(
    stdout: &mut dyn Write,
    device: &str,
    requested: &str,
    result: &Value,
) -> io::Result<()> {
    let state = match result {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("state").and_then(Value::as_str).unwrap_or(requested),
        _ => requested,
    };
    writeln!(
        stdout,
        "{}: {}",
        render::one_line(device),
        render::one_line(state)
    )
}

/// sitectl's version always; then sited's, or why it could not be had (exit 2).
fn version(client: &Client, json: bool, stdout: &mut dyn Write) -> Result<u8, Failure> {
    let daemon = ask(client, &Request::Version {}).and_then(|result| {
        serde_json::from_value::<VersionInfo>(result)
            .map_err(|e| Failure::Trouble(format!("cannot understand sited's version: {e}")))
    });
    if json {
        let doc = json!({
            "sitectl": {"version": env!("CARGO_PKG_VERSION"), "protocol": PROTOCOL_VERSION},
            "sited": daemon.as_ref().ok(),
        });
        serde_json::to_writer(&mut *stdout, &doc).map_err(io::Error::from)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{}", render::client_version())?;
        if let Ok(info) = &daemon {
            stdout.write_all(render::daemon_version(info).as_bytes())?;
        }
    }
    // Print what we have before the reason we lack the rest, so the two read in order.
    stdout.flush()?;
    daemon.map(|_| EXIT_OK)
}
