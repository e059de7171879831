//! `sited-gen-docs OUT_DIR`: writes the package's man pages and shell completions, generated from
//! the same clap definitions the binaries parse their command lines with, so they cannot drift:
//!
//! - `OUT_DIR/man/sited.8`, `OUT_DIR/man/sitectl.1` and one `sitectl-<command>.1` per command;
//! - `OUT_DIR/completions/{bash,zsh,fish}/` for both programs.
//!
//! `tests/build-deb.sh` runs it and packages what it writes.

use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sited-gen-docs OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(written) => {
            println!("sited-gen-docs: {written} files in {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sited-gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> std::io::Result<usize> {
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let mut written = 0;

    let sited = site_daemon::cli::Args::command();
    write_man(&sited, "8", &man.join("sited.8"))?;
    written += 1;

    let sitectl = site_ctl::cli::Cli::command();
    write_man(&sitectl, "1", &man.join("sitectl.1"))?;
    written += 1;
    for sub in sitectl.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("sitectl-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        write_man(&page, "1", &man.join(format!("{name}.1")))?;
        written += 1;
    }

    use clap_complete::Shell;
    for (shell, dir) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir)?;
        for mut command in [
            site_daemon::cli::Args::command(),
            site_ctl::cli::Cli::command(),
        ] {
            let name = command.get_name().to_string();
            clap_complete::generate_to(shell, &mut command, &name, &dir)?;
            written += 1;
        }
    }
    Ok(written)
}

fn write_man(command: &clap::Command, section: &'static str, path: &Path) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section(section)
        .manual("sited")
        .render(&mut page)?;
    std::fs::write(path, page)
}
