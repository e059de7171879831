#!/usr/bin/env bash
# The one command that runs every check: what CI runs (.ci/run calls exactly this) and what the
# README gives a newcomer. Fails fast, with a header and a time for each step.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  local name=$1; shift
  echo
  echo "==== $name"
  local start=$SECONDS
  "$@"
  echo "---- $name: ok ($((SECONDS - start)) s)"
}

validate_configs() {
  # Shipped configs are checked against this build's plugins (the Pi's plugin-dir is not here).
  for f in etc/*.toml; do
    target/debug/sited --check-config "$f" --plugin-dir target/debug
  done
}

aarch64_clippy() {
  bash tests/setup-aarch64.sh
  # shellcheck disable=SC1091
  . "${XDG_CACHE_HOME:-$HOME/.cache}/rust-aarch64-cross/env.sh"
  cargo clippy --workspace --all-targets --locked --target aarch64-unknown-linux-gnu -- -D warnings
}

# The whole suite cross-built for the Pi and run under qemu-user through cargo's target runner:
# the end-to-end tests start sited and sitectl through that runner too (tests/lib.rs), not
# through binfmt_misc.
aarch64_tests() {
  # shellcheck disable=SC1091
  . "${XDG_CACHE_HOME:-$HOME/.cache}/rust-aarch64-cross/env.sh"
  cargo build --workspace --all-targets --locked --target aarch64-unknown-linux-gnu
  cargo test --workspace --locked --target aarch64-unknown-linux-gnu
}

total=$SECONDS
step "rustfmt" cargo fmt --all -- --check
# Builds the plugin .so files too: cargo test does not build cdylibs nothing depends on, and
# the end-to-end tests load the real ones.
step "build" cargo build --workspace --all-targets --locked
step "clippy (x86_64)" cargo clippy --workspace --all-targets --locked -- -D warnings
step "clippy (aarch64, the Pi)" aarch64_clippy
step "tests" cargo test --workspace --locked
step "Miri: the plugin ABI boundary" bash tests/miri.sh
step "tests (aarch64, the Pi, under qemu-user)" aarch64_tests
step "shipped configs" validate_configs
step "systemd unit" bash tests/check-systemd.sh
step "package (amd64)" bash tests/build-deb.sh
deb() { ls -t "${CARGO_TARGET_DIR:-target}"/debian/sited_*_amd64.deb | head -n 1; }
step "VM: the site on gpio-sim (real kernel GPIO and PWM)" bash tests/vm/gpio-site.sh "$(deb)"
step "VM: the package on stock Debian under systemd" bash tests/vm/systemd-site.sh "$(deb)"
step "package (arm64, the Pi)" bash tests/build-deb.sh --target aarch64-unknown-linux-gnu
step "VM: an emulated Raspberry Pi 3 (rppal)" bash tests/vm/pi-site.sh "$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/sited_*_arm64.deb | head -n 1)"
step "fuzz (${FUZZ_SECS:-30} s a target)" bash tests/fuzz.sh
echo
echo "all checks passed in $((SECONDS - total)) s"
