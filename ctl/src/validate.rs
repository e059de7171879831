//! `sitectl validate`: sitectl shares only the protocol with sited, so it checks a config file
//! the way `nginx -t` does, by asking the daemon binary itself (`sited --check-config FILE`).

use crate::Environment;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$SITED_BIN` if set (trusted as given: an explicit choice is not second-guessed), else a
/// `sited` beside sitectl, else the first executable `sited` on `$PATH`.
pub fn find_sited(env: &Environment) -> Result<PathBuf, String> {
    if let Some(bin) = env.sited_bin.as_ref().filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let beside = env
        .current_exe
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join("sited"));
    if let Some(candidate) = beside.as_deref().filter(|p| is_executable(p)) {
        return Ok(candidate.to_path_buf());
    }
    let on_path = env
        .path
        .as_deref()
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("sited"))
        .find(|p| is_executable(p));
    on_path.ok_or_else(|| {
        let beside = beside
            .as_deref()
            .and_then(Path::parent)
            .map(|d| format!(", not in {}", d.display()))
            .unwrap_or_default();
        format!("cannot find sited (SITED_BIN is not set{beside}, not on PATH); set SITED_BIN")
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What running `sited --check-config` produced.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// sited's exit status, passed on as sitectl's.
    pub code: u8,
}

/// Runs `sited --check-config FILE [--plugin-dir DIR]` and collects what it says. `Err` is a
/// one-line reason why it could not be run or did not finish (exit status 2).
pub fn check(sited: &Path, config: &Path, plugin_dir: Option<&Path>) -> Result<Outcome, String> {
    // Said before trying: under an emulator (qemu-user) a failed exec shows only as exit 127.
    if let Err(e) = std::fs::metadata(sited) {
        return Err(format!(
            "cannot run {}: {}",
            sited.display(),
            crate::client::describe(&e)
        ));
    }
    let run = || {
        let mut command = Command::new(sited);
        command.arg("--check-config").arg(config);
        if let Some(dir) = plugin_dir {
            command.arg("--plugin-dir").arg(dir);
        }
        command.output()
    };
    // ETXTBSY: the binary is still open for writing somewhere (an upgrade being unpacked, or a
    // forked child that inherited the descriptor); it clears within moments.
    let mut output = run();
    for _ in 0..3 {
        match &output {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                output = run();
            }
            _ => break,
        }
    }
    let output = output.map_err(|e| {
        format!(
            "cannot run {}: {}",
            sited.display(),
            crate::client::describe(&e)
        )
    })?;
    let code = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(2),
        (None, Some(signal)) => {
            return Err(format!(
                "{} --check-config was killed by signal {signal}",
                sited.display()
            ));
        }
        (None, None) => return Err(format!("{} --check-config did not exit", sited.display())),
    };
    Ok(Outcome {
        stdout: output.stdout,
        stderr: output.stderr,
        code,
    })
}

/// When a config meant for another machine (the Pi's plugin directory) is checked on a
/// development machine, the plugins are not where it says: suggest this build's, which sit
/// beside `sited` (`target/debug`).
pub fn plugin_hint(outcome: &Outcome, plugin_dir: Option<&Path>, sited: &Path) -> Option<String> {
    let said = String::from_utf8_lossy(&outcome.stderr);
    if outcome.code == 0 || plugin_dir.is_some() || !said.contains("no plugin for kind") {
        return None;
    }
    let here = sited.parent().filter(|dir| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libsited_plugin_") && name.ends_with(".so")
            })
        })
    });
    let dir = here.map_or_else(|| "target/debug".to_string(), |d| d.display().to_string());
    Some(format!(
        "sitectl: hint: to check this file against the plugins of a build here, add --plugin-dir {dir}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_sited(dir: &Path, script: &str) -> PathBuf {
        let path = dir.join("sited");
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn a_missing_plugin_suggests_this_builds_plugin_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("libsited_plugin_button.so"), b"").expect("plugin");
        let outcome = Outcome {
            stdout: Vec::new(),
            stderr: b"sited: x.toml:3: device[0].kind: no plugin for kind \"button\": ...".to_vec(),
            code: 1,
        };
        let sited = dir.path().join("sited");
        let hint = plugin_hint(&outcome, None, &sited).expect("a hint");
        assert!(
            hint.ends_with(&format!("--plugin-dir {}", dir.path().display())),
            "{hint}"
        );
        assert_eq!(
            plugin_hint(&outcome, Some(dir.path()), &sited),
            None,
            "already given"
        );
        let fine = Outcome { code: 0, ..outcome };
        assert_eq!(plugin_hint(&fine, None, &sited), None);
    }

    #[test]
    fn sited_bin_wins_even_if_another_is_beside_sitectl() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sited(dir.path(), "exit 0");
        let env = Environment {
            sited_bin: Some("/opt/sited/bin/sited".into()),
            current_exe: Some(dir.path().join("sitectl")),
            path: None,
            ..Environment::default()
        };
        assert_eq!(find_sited(&env), Ok(PathBuf::from("/opt/sited/bin/sited")));
    }

    #[test]
    fn sited_beside_sitectl_comes_before_path() {
        let beside = tempfile::tempdir().expect("tempdir");
        let on_path = tempfile::tempdir().expect("tempdir");
        let expected = fake_sited(beside.path(), "exit 0");
        fake_sited(on_path.path(), "exit 0");
        let env = Environment {
            sited_bin: None,
            current_exe: Some(beside.path().join("sitectl")),
            path: Some(on_path.path().as_os_str().to_owned()),
            ..Environment::default()
        };
        assert_eq!(find_sited(&env), Ok(expected));
    }

    #[test]
    fn path_is_searched_for_an_executable_sited() {
        let not_exec = tempfile::tempdir().expect("tempdir");
        fs::write(not_exec.path().join("sited"), "not a program").expect("write");
        let on_path = tempfile::tempdir().expect("tempdir");
        let expected = fake_sited(on_path.path(), "exit 0");
        let path = std::env::join_paths([not_exec.path(), on_path.path()]).expect("join");
        let env = Environment {
            sited_bin: Some("".into()),
            current_exe: None,
            path: Some(path),
            ..Environment::default()
        };
        assert_eq!(find_sited(&env), Ok(expected));
    }

    #[test]
    fn nothing_found_is_one_line_naming_sited_bin() {
        let empty = tempfile::tempdir().expect("tempdir");
        let env = Environment {
            sited_bin: None,
            current_exe: Some(empty.path().join("sitectl")),
            path: Some(empty.path().as_os_str().to_owned()),
            ..Environment::default()
        };
        let err = find_sited(&env).expect_err("nothing there");
        assert!(err.starts_with("cannot find sited"), "{err}");
        assert!(err.contains("set SITED_BIN"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn check_passes_arguments_output_and_exit_status_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sited = fake_sited(dir.path(), r#"echo "args: $*"; echo "bad key" >&2; exit 1"#);
        let outcome = check(&sited, Path::new("/etc/sited/sited.toml"), None).expect("runs");
        assert_eq!(outcome.code, 1);
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout),
            "args: --check-config /etc/sited/sited.toml\n"
        );
        assert_eq!(String::from_utf8_lossy(&outcome.stderr), "bad key\n");
    }

    #[test]
    fn check_passes_plugin_dir_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sited = fake_sited(dir.path(), r#"echo "$*""#);
        let outcome = check(&sited, Path::new("a.toml"), Some(Path::new("/p"))).expect("runs");
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout),
            "--check-config a.toml --plugin-dir /p\n"
        );
        assert_eq!(outcome.code, 0);
    }

    #[test]
    fn a_sited_killed_by_a_signal_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sited = fake_sited(dir.path(), "kill -TERM $$");
        let err = check(&sited, Path::new("x.toml"), None).expect_err("killed");
        assert!(err.contains("killed by signal 15"), "{err}");
    }
}
