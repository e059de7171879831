//! `sitectl`: everything happens in [`site_ctl::run`]; this only wires it to the process.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = site_ctl::run(
        std::env::args_os(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
