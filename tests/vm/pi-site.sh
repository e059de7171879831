#!/usr/bin/env bash
# The emulated Raspberry Pi tier: qemu's raspi3b (qemu 7.2, single-threaded TCG: multi-threaded
# is 3-10x slower and erratic on two cores) boots Debian's arm64 kernel with the Pi 3 device tree
# and a busybox initramfs holding the arm64 package's sited, sitectl and plugins with the
# shipped config; guest/pi-site.sh runs as /init. What this cannot show: edges (qemu's GPIO
# model has no inputs and raises no interrupt), pulls, hardware PWM, and the Pi 4 and 5.
# Usage: bash tests/vm/pi-site.sh PATH/TO/sited_<version>_arm64.deb
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
deb=${1:?usage: pi-site.sh sited_<version>_arm64.deb}
# shellcheck disable=SC1090
. "$(SITED_VM_PI=1 bash "$HERE/prepare.sh")"
command -v qemu-aarch64 >/dev/null || { echo "pi-site: qemu-aarch64 not found (bash tests/setup-aarch64.sh installs qemu-user)" >&2; exit 1; }
[ -d /usr/aarch64-linux-gnu/lib ] || { echo "pi-site: /usr/aarch64-linux-gnu/lib missing (bash tests/setup-aarch64.sh installs it)" >&2; exit 1; }
OUT=${VM_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules,lib/aarch64-linux-gnu}
dpkg-deb -x "$deb" "$root"
cp "$VM_PI/busybox" "$root/bin/busybox"
# Applet links (not busybox itself: a busybox -> busybox link makes every exec fail, ELOOP).
for applet in $(qemu-aarch64 "$VM_PI/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cp "$VM_PI/bcm2835_wdt.ko" "$root/lib/modules/"
# glibc for aarch64 from the cross toolchain (bookworm's, as in the package's Depends).
for lib in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1; do
  cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$root/lib/aarch64-linux-gnu/"
done
cp -L /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 "$root/lib/ld-linux-aarch64.so.1"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\ngpio:x:997:\nsited-operators:x:998:\n' > "$root/etc/group"
cp "$HERE/guest/pi-site.sh" "$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | "$VM_BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")

log="$OUT/pi-site.log"
start=$SECONDS
LD_LIBRARY_PATH="$VM_PI/qemu/usr/lib/x86_64-linux-gnu:$VM_PI/qemu/lib/x86_64-linux-gnu" timeout 300 \
  "$VM_PI/qemu/usr/bin/qemu-system-aarch64" -L "$VM_PI/qemu/usr/share/qemu" \
  -M raspi3b -accel tcg,thread=single -display none -monitor none -no-reboot \
  -chardev stdio,id=c0,mux=on,signal=off -serial chardev:c0 -serial chardev:c0 \
  -kernel "$VM_PI/Image" -dtb "$VM_PI/bcm2837-rpi-3-b.dtb" -initrd "$work/initramfs.gz" \
  -append "console=ttyAMA0 panic=-1 rdinit=/init iomem=relaxed quiet" < /dev/null > "$log" 2>&1 || true
took=$((SECONDS - start))
grep -a -E '^(ok|not ok) - |^GPLEV0' "$log" | tr -d '\r' || true
result=$(grep -a '^VM-RESULT' "$log" | tr -d '\r' || true)
echo "pi-site: ${result:-no result (the VM did not finish; see $log)} in ${took} s"
[[ "$result" =~ ^VM-RESULT\ pass=[1-9][0-9]*\ fail=0$ ]] || { tail -n 60 "$log" >&2; exit 1; }
