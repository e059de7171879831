#!/usr/bin/env bash
# Prepares what the VM tier needs, from Debian's packages, without installing anything on this
# machine (shared/notes/vm-test-tier.md is the measured recipe):
#   - qemu-system-x86 7.2 and its libraries, extracted (installing it would replace the machine's
#     backported qemu-utils);
#   - Debian's current bookworm kernel (its ABI is resolved from linux-image-amd64 each time, as
#     it moves with every security update), as an uncompressed vmlinux (PVH boot skips ~3 s of
#     XZ under TCG), and its configfs module;
#   - gpio-sim, which no Debian kernel builds, compiled out of tree against the extracted
#     headers from the matching linux-source (gpio-sim.c + irq_sim.c, one patched line);
#   - sited's test-only PWM chip (modules/sited-test-pwm.c), compiled the same way;
#   - busybox-static.
# Everything goes to $SITED_VM_CACHE (default ~/.cache/sited-vm), keyed by version, so a warm
# run downloads and builds nothing. Prints the path of an env file to source.
# Needs: apt-get, dpkg-deb, gcc, make, xz (all on a stock Debian); fails saying what is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SITED_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sited-vm}
mkdir -p "$CACHE"
say() { echo "vm/prepare: $*" >&2; }
die() { echo "vm/prepare: $*" >&2; exit 1; }
for tool in apt-get apt-cache dpkg-deb gcc make xz; do
  command -v "$tool" >/dev/null || die "$tool not found; the VM tier needs it (apt-get install $tool)"
done

# ---- a private apt configuration: the machine's sources and lists are not touched -------------
APT="$CACHE/apt"
# shellcheck source=tests/private-apt.sh
. "$HERE/../private-apt.sh"
private_apt "$APT" "" "debian bookworm" "debian bookworm-updates" "debian-security bookworm-security"
export APT_CONFIG="$APT/apt.conf"
# The lists are refreshed at most once an hour: the kernel ABI is looked up in them.
if [ -z "$(find "$APT/lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then
  say "apt-get update (private lists in $APT)"
  apt-get update -qq || die "apt-get update failed (is deb.debian.org reachable?)"
fi
# Versions as they may appear in a path (an epoch's ':' would split LD_LIBRARY_PATH).
version_of() { apt-cache show "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1; }
path_safe() { echo "$1" | tr ':~' '__'; }
download() { (cd "$APT/debs" && apt-get download -qq "$@") || die "downloading $* failed"; }
deb_of() { ls "$APT/debs/$1"_*.deb 2>/dev/null | head -n 1; }

# ---- the kernel -------------------------------------------------------------------------------
KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64's kernel package"
KVER=${KPKG#linux-image-}
KVERSION=$(version_of "$KPKG")
SRCPKG=linux-source-${KVER%%.0-*}            # 6.1.0-57-amd64 -> linux-source-6.1
PWM_SUM=$(sha256sum "$HERE/modules/sited-test-pwm.c" | cut -c1-16)
# The modules the systemd VM's initramfs loads, in dependency order (busybox insmod resolves
# nothing), to mount its ext4 root on virtio-blk.
BOOT_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"
KDIR="$CACHE/kernel-$KVER-$(path_safe "$KVERSION")-$PWM_SUM-2"
if [ ! -f "$KDIR/ready" ]; then
  say "kernel $KVER ($KVERSION): downloading the image, headers and source"
  rm -rf "$APT/debs"/*
  HDR_COMMON=$(apt-cache depends "linux-headers-$KVER" | sed -n 's/^ *Depends: \(linux-headers-.*-common\)$/\1/p' | head -n 1)
  KBUILD=$(apt-cache depends "linux-headers-$KVER" | sed -n 's/^ *Depends: \(linux-kbuild-.*\)$/\1/p' | head -n 1)
  download "$KPKG" "linux-headers-$KVER" "$HDR_COMMON" "$KBUILD" "$SRCPKG=$KVERSION"
  work="$CACHE/work"
  rm -rf "$work" "$KDIR"
  mkdir -p "$work/root" "$work/src" "$KDIR/modules"
  for pkg in "$KPKG" "linux-headers-$KVER" "$HDR_COMMON" "$KBUILD"; do
    dpkg-deb -x "$(deb_of "$pkg")" "$work/root"
  done
  say "taking gpio-sim.c, gpiolib.h, irq_sim.c and extract-vmlinux from $SRCPKG"
  dpkg-deb --fsys-tarfile "$(deb_of "$SRCPKG")" | tar -xO "./usr/src/$SRCPKG.tar.xz" | xz -dc \
    | tar -x -C "$work/src" --strip-components=1 \
        "$SRCPKG/drivers/gpio/gpio-sim.c" "$SRCPKG/drivers/gpio/gpiolib.h" \
        "$SRCPKG/kernel/irq/irq_sim.c" "$SRCPKG/scripts/extract-vmlinux"
  sh "$work/src/scripts/extract-vmlinux" "$work/root/boot/vmlinuz-$KVER" > "$KDIR/vmlinux"
  cp "$work/root/lib/modules/$KVER/kernel/fs/configfs/configfs.ko" "$KDIR/modules/"
  mkdir -p "$KDIR/boot-modules"
  for m in $BOOT_MODULES; do
    cp "$(find "$work/root/lib/modules/$KVER/kernel" -name "$m.ko" | head -n 1)" "$KDIR/boot-modules/"
  done
  echo "$BOOT_MODULES" > "$KDIR/boot-modules/order"
  # The headers' Makefile includes the -common tree by its installed path; point it here.
  headers="$work/root/usr/src/linux-headers-$KVER"
  sed -i "s#include /usr/src/#include $work/root/usr/src/#" "$headers/Makefile"
  # gpio-sim with the IRQ simulator built in (Debian builds neither); irq_to_desc is not
  # exported to modules, generic_handle_irq does the same here.
  mkdir -p "$work/gpio-sim" "$work/pwm"
  cp "$work/src/drivers/gpio/gpio-sim.c" "$work/gpio-sim/gpio-sim-core.c"
  cp "$work/src/drivers/gpio/gpiolib.h" "$work/src/kernel/irq/irq_sim.c" "$work/gpio-sim/"
  sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$work/gpio-sim/irq_sim.c"
  printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-core.o irq_sim.o\n' > "$work/gpio-sim/Kbuild"
  cp "$HERE/modules/sited-test-pwm.c" "$work/pwm/"
  echo 'obj-m := sited-test-pwm.o' > "$work/pwm/Kbuild"
  for m in gpio-sim pwm; do
    make -s -C "$headers" M="$work/$m" modules 2>&1 | grep -v '^Skipping BTF' >&2 || true
    ls "$work/$m"/*.ko >/dev/null 2>&1 || die "building $m against $KVER failed"
    cp "$work/$m"/*.ko "$KDIR/modules/"
  done
  strip --strip-debug "$KDIR"/modules/*.ko
  rm -rf "$work" "$APT/debs"/*
  touch "$KDIR/ready"
fi

# ---- qemu -------------------------------------------------------------------------------------
QVERSION=$(version_of qemu-system-x86)
QDIR="$CACHE/qemu-$(path_safe "$QVERSION")"
if [ ! -f "$QDIR/ready" ]; then
  say "qemu-system-x86 $QVERSION: downloading and extracting it and its libraries"
  rm -rf "$APT/debs"/* "$QDIR"
  mkdir -p "$QDIR/root"
  # What apt would install here (this machine's libraries serve the rest), extracted instead.
  pkgs=$(apt-get install -s --no-install-recommends qemu-system-x86 2>/dev/null | awk '/^Inst/{print $2}')
  [ -n "$pkgs" ] || die "cannot resolve qemu-system-x86's dependencies"
  # shellcheck disable=SC2086
  download $pkgs
  for d in "$APT/debs"/*.deb; do dpkg-deb -x "$d" "$QDIR/root"; done
  rm -rf "$APT/debs"/*
  touch "$QDIR/ready"
fi

# ---- busybox ----------------------------------------------------------------------------------
BVERSION=$(version_of busybox-static)
BDIR="$CACHE/busybox-$(path_safe "$BVERSION")"
if [ ! -f "$BDIR/ready" ]; then
  say "busybox-static $BVERSION"
  rm -rf "$APT/debs"/* "$BDIR"
  mkdir -p "$BDIR/root"
  download busybox-static
  dpkg-deb -x "$(deb_of busybox-static)" "$BDIR/root"
  cp "$BDIR/root/bin/busybox" "$BDIR/busybox"
  rm -rf "$BDIR/root" "$APT/debs"/*
  touch "$BDIR/ready"
fi

# ---- a stock Debian with systemd, for the package tier (SITED_VM_ROOTFS=1) ---------------------
# debootstrap minbase plus systemd, udev and kmod: no procps, no gpio udev rule, as on a minimal
# image. debootstrap itself is extracted from its package, not installed.
ROOTFS=""
if [ "${SITED_VM_ROOTFS:-0}" = 1 ]; then
  command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found (apt-get install e2fsprogs)"
  command -v wget >/dev/null || die "wget not found; debootstrap needs it (apt-get install wget)"
  [ "$(id -u)" = 0 ] || die "building the Debian image needs root (debootstrap, file ownership)"
  SVERSION=$(version_of systemd)
  ROOTFS="$CACHE/rootfs-bookworm-systemd-$(path_safe "$SVERSION")"
  if [ ! -f "$ROOTFS/ready" ]; then
    say "debootstrap bookworm minbase with systemd $SVERSION (about 40 s, once)"
    rm -rf "$APT/debs"/* "$ROOTFS" "$CACHE/debootstrap"
    download debootstrap
    dpkg-deb -x "$(deb_of debootstrap)" "$CACHE/debootstrap"
    mkdir -p "$ROOTFS"
    DEBOOTSTRAP_DIR="$CACHE/debootstrap/usr/share/debootstrap" "$CACHE/debootstrap/usr/sbin/debootstrap" \
      --variant=minbase --include=systemd,systemd-sysv,udev,kmod bookworm "$ROOTFS/root" http://deb.debian.org/debian \
      > "$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$ROOTFS/root/var/cache/apt/archives"/*.deb "$APT/debs"/*
    touch "$ROOTFS/ready"
  fi
fi

# ---- an emulated Raspberry Pi 3 (SITED_VM_PI=1): qemu's raspi3b, Debian's arm64 kernel -------
# arm64 packages come through a second private apt configuration; the machine gets no foreign
# architecture (shared/notes/emulated-pi.md).
PI=""
if [ "${SITED_VM_PI:-0}" = 1 ]; then
  A64="$CACHE/apt-arm64"
  private_apt "$A64" arm64 "debian bookworm" "debian bookworm-updates" "debian-security bookworm-security"
  a64() { APT_CONFIG="$A64/apt.conf" "$@"; }
  if [ -z "$(find "$A64/lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then
    a64 apt-get update -qq || die "apt-get update (arm64) failed"
  fi
  K64=$(a64 apt-cache depends linux-image-arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-arm64\)$/\1/p' | head -n 1)
  [ -n "$K64" ] || die "cannot resolve linux-image-arm64's kernel package"
  K64VERSION=$(a64 apt-cache show "$K64" | sed -n 's/^Version: //p' | head -n 1)
  BB64=$(a64 apt-cache show busybox-static | sed -n 's/^Version: //p' | head -n 1)
  QAVERSION=$(version_of qemu-system-arm)
  PI="$CACHE/pi-$K64-$(path_safe "$K64VERSION")-$(path_safe "$BB64")-qemu-$(path_safe "$QAVERSION")"
  if [ ! -f "$PI/ready" ]; then
    say "emulated Pi: $K64 ($K64VERSION), busybox-static arm64, qemu-system-arm $QAVERSION"
    rm -rf "$PI" "$APT/debs"/*
    mkdir -p "$PI/qemu" "$PI/k" "$PI/bb"
    (cd "$APT/debs" && a64 apt-get download -qq "$K64" busybox-static) || die "downloading the arm64 kernel failed"
    dpkg-deb -x "$APT/debs/${K64}_"*.deb "$PI/k"
    dpkg-deb -x "$APT/debs/busybox-static_"*.deb "$PI/bb"
    rm -rf "$APT/debs"/*
    qpkgs=$(apt-get install -s --no-install-recommends qemu-system-arm 2>/dev/null | awk '/^Inst/{print $2}')
    # shellcheck disable=SC2086
    download $qpkgs
    for d in "$APT/debs"/*.deb; do dpkg-deb -x "$d" "$PI/qemu"; done
    rm -rf "$APT/debs"/*
    KV=${K64#linux-image-}
    cp "$PI/k/boot/vmlinuz-$KV" "$PI/Image"
    cp "$PI/k/usr/lib/linux-image-$KV/broadcom/bcm2837-rpi-3-b.dtb" "$PI/"
    # Without the watchdog driver, poweroff on raspi3b halts instead of ending qemu.
    cp "$(find "$PI/k/lib/modules" -name 'bcm2835_wdt.ko' | head -n 1)" "$PI/"
    cp "$PI/bb/bin/busybox" "$PI/busybox"
    rm -rf "$PI/k" "$PI/bb"
    touch "$PI/ready"
  fi
fi

Q="$QDIR/root"
cat > "$CACHE/env.sh" <<ENV
# Written by tests/vm/prepare.sh: the VM tier's kernel, modules, qemu and busybox.
export VM_KVER="$KVER"
export VM_KERNEL="$KDIR/vmlinux"
export VM_MODULES="$KDIR/modules"
export VM_BOOT_MODULES="$KDIR/boot-modules"
export VM_ROOTFS="${ROOTFS:+$ROOTFS/root}"
export VM_PI="$PI"
export VM_BUSYBOX="$BDIR/busybox"
export VM_QEMU="$Q/usr/bin/qemu-system-x86_64"
export VM_QEMU_BIOS="-L $Q/usr/share/qemu -L $Q/usr/share/seabios"
export VM_QEMU_LIBS="$Q/usr/lib/x86_64-linux-gnu:$Q/lib/x86_64-linux-gnu"
ENV
# A last check that the extracted qemu runs at all.
LD_LIBRARY_PATH="$Q/usr/lib/x86_64-linux-gnu:$Q/lib/x86_64-linux-gnu" "$Q/usr/bin/qemu-system-x86_64" --version >/dev/null \
  || die "the extracted qemu does not run (missing libraries?)"
echo "$CACHE/env.sh"
