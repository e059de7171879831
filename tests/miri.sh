#!/usr/bin/env bash
# Runs the plugin ABI's boundary tests (plugins/api: the descriptor reader and the export
# trampolines, driven with raw pointers as a host drives them) under Miri, the nightly
# toolchain's undefined-behaviour checker: a reference made before a size is checked, a read
# past a shorter descriptor, a leaked or doubly dropped panic payload each fail it. Miri and
# the nightly rust-src it builds its sysroot from are rustup components, added if missing;
# the sysroot and build are cached outside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "miri: the nightly toolchain is not installed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src
fi
export CARGO_TARGET_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/sited-miri/target
cargo +nightly miri test --locked -p site-plugin-api -- abi:: boundary
