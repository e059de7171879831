#!/usr/bin/env bash
# The gpio-sim tier: boots Debian's kernel in qemu (TCG) with a busybox initramfs holding sited,
# sitectl and the plugins from the package, gpio-sim and the test PWM chip, and runs
# guest/gpio-site.sh as /init: the seed-000 site played through real GPIO character devices.
# Usage: bash tests/vm/gpio-site.sh PATH/TO/sited_<version>_amd64.deb [--bench N]
# Exits 0 only if every check in the guest passed; the guest's console is in $VM_OUT/gpio-site.log.
# --bench N also measures edge -> output latency over N edges (about 0.15 s each under TCG).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
deb=${1:?usage: gpio-site.sh sited_<version>_amd64.deb [--bench N]}
bench=""
[ "${2:-}" = --bench ] && bench=" sited.bench=${3:?--bench needs a count}"
# shellcheck disable=SC1090
. "$(bash "$HERE/prepare.sh")"
OUT=${VM_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- the initramfs ------------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules,lib64,lib/x86_64-linux-gnu,usr/share/sited-vm}
dpkg-deb -x "$deb" "$root"
cp "$VM_BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$VM_MODULES"/*.ko "$root/lib/modules/"
# sited and sitectl are linked against glibc: the host's (bookworm's, as in the package's Depends).
for lib in $(ldd "$root/usr/bin/sited" "$root/usr/bin/sitectl" | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | sort -u); do
  cp -L "$lib" "$root$lib"
done
cp "$root/etc/sited/sited.toml" "$root/usr/share/sited-vm/sited.toml"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\ngpio:x:997:\nsited-operators:x:998:\n' > "$root/etc/group"
cp "$HERE/guest/gpio-site.sh" "$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | "$VM_BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")

# ---- the VM -------------------------------------------------------------------------------------
# -M pc: microvm hangs on a loaded host (the notes); TCG, because this /dev/kvm runs no stock kernel.
log="$OUT/gpio-site.log"
start=$SECONDS
# shellcheck disable=SC2086
LD_LIBRARY_PATH="$VM_QEMU_LIBS" timeout 900 "$VM_QEMU" $VM_QEMU_BIOS \
  -M pc -nic none -accel tcg,thread=multi -cpu max -smp 2 -m 512 -nographic -no-reboot \
  -kernel "$VM_KERNEL" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3$bench" > "$log" 2>&1 || true
took=$((SECONDS - start))
grep -a -E '^(ok|not ok) - |^chips: |^BENCH ' "$log" | tr -d '\r' || true
result=$(grep -a '^VM-RESULT' "$log" | tr -d '\r' || true)
echo "gpio-site: ${result:-no result (the VM did not finish; see $log)} in ${took} s"
[[ "$result" =~ ^VM-RESULT\ pass=[1-9][0-9]*\ fail=0$ ]] || { tail -n 60 "$log" >&2; exit 1; }
