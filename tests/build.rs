//! Builds the test suite's C plugins (`tests/plugins/*.c`) with the target's C compiler (the
//! `cc` crate finds it, a cross compiler for the Pi's aarch64 included) as shared objects under
//! `OUT_DIR/c-plugins/`, one directory per plugin directory a test points sited at:
//! - `current/`: `buzzer` and `probe` against this ABI (1.1);
//! - `abi-1.0/`: `buzzer` against the previous minor version (a shorter descriptor);
//! - `null-validate/`: `probe` with a null `validate` entry point.
//!
//! The tests learn where from `SITED_C_PLUGINS`, and which compiler from `SITED_TEST_CC` (to
//! compile the C header against the Rust layout).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("c-plugins");
    let include = here.join("../plugins/api/include");
    let sources = here.join("plugins");
    for file in ["plugins/buzzer.c", "plugins/probe.c", "plugins/flatjson.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-changed=../plugins/api/include/sited_plugin.h");

    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let build = |kind: &str, dir: &str, defines: &[&str]| {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir).expect("plugin dir");
        let so = dir.join(format!("libsited_plugin_{kind}.so"));
        let mut cmd = compiler.to_command();
        cmd.args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared",
        ])
        .args(["-fvisibility=hidden", "-pthread"])
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(&sources)
        .args(defines)
        .arg("-o")
        .arg(&so)
        .arg(sources.join(format!("{kind}.c")));
        run(cmd, &so);
    };
    build("buzzer", "current", &[]);
    build("probe", "current", &[]);
    build("buzzer", "abi-1.0", &["-DSITED_PLUGIN_ABI_MINOR=0"]);
    build("probe", "null-validate", &["-DPROBE_NULL_VALIDATE"]);

    println!("cargo:rustc-env=SITED_C_PLUGINS={}", out.display());
    println!(
        "cargo:rustc-env=SITED_TEST_CC={}",
        compiler.path().display()
    );
    let args: Vec<String> = compiler
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("cargo:rustc-env=SITED_TEST_CC_ARGS={}", args.join("\u{1f}"));
    println!(
        "cargo:rustc-env=SITED_PLUGIN_INCLUDE={}",
        include.canonicalize().expect("include dir").display()
    );
}

fn run(mut cmd: Command, so: &Path) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler ({cmd:?}): {e}"));
    assert!(
        status.success(),
        "building {} failed: {cmd:?}",
        so.display()
    );
}
