#!/usr/bin/env bash
# Builds the Debian package: target/debian/sited_<version>_<arch>.deb, and beside it
# sited-dbgsym_<version>_<arch>.ddeb with the debug info split off the stripped binaries (so a
# backtrace from the field can still be symbolised). For the Pi:
#   bash tests/build-deb.sh --target aarch64-unknown-linux-gnu
# puts target/debian/sited_<version>_arm64.deb in place (the cross toolchain comes from
# tests/setup-aarch64.sh).
# What is in it, and why, is in the README ("Installing on a Raspberry Pi").
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.6.4
target=""
case "${1:-}" in
  --target) target=${2:?--target needs a triple} ;;
  "") ;;
  *) echo "usage: bash tests/build-deb.sh [--target aarch64-unknown-linux-gnu]" >&2; exit 2 ;;
esac

say() { echo "build-deb: $*"; }

if ! cargo deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\$"; then
  say "installing cargo-deb $CARGO_DEB_VERSION (once; into ~/.cargo/bin)"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
for tool in objcopy strip dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (apt-get install binutils dpkg-dev)" >&2; exit 1; }
done

target_args=()
target_dir=${CARGO_TARGET_DIR:-target}
out_dir="$target_dir/release"
if [ -n "$target" ]; then
  target_args=(--target "$target")
  out_dir="$target_dir/$target/release"
  if [ "$target" = aarch64-unknown-linux-gnu ]; then
    bash tests/setup-aarch64.sh
    # shellcheck disable=SC1091
    . "${XDG_CACHE_HOME:-$HOME/.cache}/rust-aarch64-cross/env.sh"
    # cargo-deb strips and splits debug info with the target's binutils.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_STRIP=aarch64-linux-gnu-strip
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_OBJCOPY=aarch64-linux-gnu-objcopy
  fi
fi

packages=(-p site-daemon -p site-ctl)
for p in button reed switch led relay siren servo; do packages+=(-p "site-plugin-$p"); done
say "building ${target:-for this machine} (release: LTO, debug info to split off)"
cargo build --release --locked "${target_args[@]}" "${packages[@]}"

say "generating the man pages and shell completions from the clap definitions"
rm -rf "$out_dir/pkg-docs"
cargo run --release --locked --quiet -p site-pkg-gen -- "$out_dir/pkg-docs"

say "packaging"
cargo deb -p site-daemon --no-build --locked "${target_args[@]}" --dbgsym --compress-debug-symbols=zlib

arch=$(dpkg --print-architecture)
[ "$target" = aarch64-unknown-linux-gnu ] && arch=arm64
for deb in "$target_dir"/debian/sited_*_"$arch".deb; do
  say "$deb: $(dpkg-deb -f "$deb" Installed-Size) KiB installed, $(du -k "$deb" | cut -f1) KiB download"
done
