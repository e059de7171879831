#!/usr/bin/env bash
# Sets up checking (clippy, build, tests under qemu-user) for the Raspberry Pi's target,
# aarch64-unknown-linux-gnu, on this Debian 12 x86_64 machine, where rustup cannot download the
# target's standard library. Measured recipe: shared/notes/aarch64-cross.md (route A):
#   1. apt: the aarch64 cross linker, glibc and qemu-user;
#   2. Debian's `rust-src` matching the installed rustc, fetched with a private apt config
#      (the machine's apt sources are not touched);
#   3. std built once for aarch64 with -Zbuild-std and installed into the toolchain's sysroot,
#      where `rustup target add` would have put it; a stamp skips all this next time;
#   4. env.sh with the linker/runner variables; a hello-world smoke test.
# Usage: bash tests/setup-aarch64.sh && . "${XDG_CACHE_HOME:-$HOME/.cache}/rust-aarch64-cross/env.sh"
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/rust-aarch64-cross"
RUSTC="${RUSTC:-rustc}"
CARGO="${CARGO:-cargo}"
mkdir -p "$CACHE"

say() { echo "setup-aarch64: $*"; }

# ---- 1. cross toolchain pieces from Debian ------------------------------------------------
need=()
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- env.sh ---------------------------------------------------------------------------------
cat > "$CACHE/env.sh" <<'ENV'
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER='qemu-aarch64 -L /usr/aarch64-linux-gnu'
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
ENV

SYSROOT=$("$RUSTC" --print sysroot)
LIBDIR="$SYSROOT/lib/rustlib/$TARGET/lib"
COMMIT=$("$RUSTC" -vV | sed -n 's/^commit-hash: //p')
VERSION=$("$RUSTC" -vV | sed -n 's/^release: //p')
STAMP="$LIBDIR/.sited-std-stamp"
# What the installed std was built from and how; a different stamp rebuilds it.
STAMP_TEXT="$COMMIT embed-bitcode"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
  say "std for $TARGET already installed (rustc $VERSION)"
else
  case "$VERSION" in *-*) say "rustc $VERSION is not a stable release; Debian has no matching rust-src" >&2; exit 1;; esac

  # ---- 2. Debian's rust-src for exactly this rustc version ---------------------------------
  SRC="$CACHE/rust-src-$VERSION/library"
  if [ ! -d "$SRC" ]; then
    APT="$CACHE/apt"
    # shellcheck source=tests/private-apt.sh
    . "$(dirname "$0")/private-apt.sh"
    private_apt "$APT" "" "debian trixie-backports" "debian trixie" "debian sid" "debian experimental"
    say "looking up Debian's rust-src $VERSION"
    APT_CONFIG="$APT/apt.conf" apt-get update -qq
    DEBVER=$(APT_CONFIG="$APT/apt.conf" apt-cache madison rust-src | awk -v v="$VERSION" '$3 ~ "^"v"\\+" {print $3; exit}')
    if [ -z "$DEBVER" ]; then
      say "Debian has no rust-src $VERSION (have: $(APT_CONFIG="$APT/apt.conf" apt-cache madison rust-src | awk '{print $3}' | tr '\n' ' '))" >&2
      exit 1
    fi
    say "downloading rust-src=$DEBVER"
    (cd "$APT/debs" && APT_CONFIG="$APT/apt.conf" apt-get download -qq "rust-src=$DEBVER")
    DEB=$(ls "$APT"/debs/rust-src_*.deb | head -n 1)
    mkdir -p "$CACHE/extract"
    dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$CACHE/extract" --wildcards "./usr/src/rustc-$VERSION/library/*"
    mkdir -p "$(dirname "$SRC")"
    rm -rf "$SRC"
    mv "$CACHE/extract/usr/src/rustc-$VERSION/library" "$SRC"
    rm -rf "$CACHE/extract" "$APT/debs" "$APT/lists" "$APT/cache"
  fi

  # ---- 3. build std once and install it into the toolchain -----------------------------------
  DUMMY="$CACHE/std-build"
  rm -rf "$DUMMY"
  mkdir -p "$DUMMY/src"
  cat > "$DUMMY/Cargo.toml" <<'TOML'
cargo-features = ["profile-rustflags"]

[package]
name = "std-build"
version = "0.0.0"
edition = "2021"

[workspace]

[profile.release]
opt-level = 3
debug = 1
codegen-units = 16

# As library/Cargo.toml has it: without this, panic = "abort" profiles cannot link.
[profile.release.package.panic_abort]
rustflags = ["-Cpanic=abort"]
TOML
  echo '' > "$DUMMY/src/lib.rs"
  say "building std for $TARGET from $SRC (about a minute)"
  # RUSTFLAGS must be unset, not empty: an empty RUSTFLAGS still wins over the target's
  # rustflags, and std would then have no embedded bitcode, so `lto = true` release builds for
  # the Pi would fail ("Can't find section .llvmbc").
  (cd "$DUMMY" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT="$SRC" \
     CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
     CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Cembed-bitcode=yes -Zunstable-options -Cforce-frame-pointers=non-leaf --remap-path-prefix=$SRC=/rustc/$COMMIT/library" \
     CARGO_TARGET_DIR="$DUMMY/target" \
     "$CARGO" build -q --release --target "$TARGET" -Zbuild-std=std,panic_abort,panic_unwind,proc_macro,test)
  mkdir -p "$LIBDIR"
  # A std built before (other flags, other hashes) would be a second candidate for every crate.
  find "$LIBDIR" -maxdepth 1 \( -name '*.rlib' -o -name '*.rmeta' \) -delete
  find "$DUMMY/target/$TARGET/release/deps" -maxdepth 1 \( -name '*.rlib' -o -name '*.rmeta' \) ! -name 'libstd_build-*' -exec cp {} "$LIBDIR/" \;
  echo "$STAMP_TEXT" > "$STAMP"
  rm -rf "$DUMMY"
  say "installed std into $LIBDIR"
fi

# ---- 4. smoke test ------------------------------------------------------------------------
# shellcheck disable=SC1091
. "$CACHE/env.sh"
HELLO="$CACHE/hello"
mkdir -p "$HELLO"
echo 'fn main() { println!("hello from {}", std::env::consts::ARCH); }' > "$HELLO/hello.rs"
"$RUSTC" --edition 2021 --target "$TARGET" -C linker=aarch64-linux-gnu-gcc -o "$HELLO/hello" "$HELLO/hello.rs"
out=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$HELLO/hello")
[ "$out" = "hello from aarch64" ] || { say "smoke test printed: $out" >&2; exit 1; }
say "ok: $out (env: $CACHE/env.sh)"
