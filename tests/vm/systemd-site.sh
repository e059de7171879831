#!/usr/bin/env bash
# The package tier: a stock Debian bookworm (debootstrap minbase with systemd, udev and kmod; no
# procps, no gpio udev rule) booted in qemu with the .deb in /root. guest/systemd-site.sh runs
# there as a service once the machine is up: apt install, enable --now, the socket's users, an
# entry through gpio-sim, reload good and bad, the watchdog, stop with outputs safe, the board
# line under the sandbox, systemd-analyze security, apt remove and purge.
# Usage: bash tests/vm/systemd-site.sh PATH/TO/sited_<version>_amd64.deb   (as root)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
deb=${1:?usage: systemd-site.sh sited_<version>_amd64.deb}
# shellcheck disable=SC1090
. "$(SITED_VM_ROOTFS=1 bash "$HERE/prepare.sh")"
OUT=${VM_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- the disk: the cached Debian plus the package and the test's units ---------------------------
root="$work/root"
cp -a "$VM_ROOTFS" "$root"
cp "$deb" "$root/root/sited.deb"
echo sitevm > "$root/etc/hostname"
mkdir -p "$root/usr/local/lib/sited-vm" "$root/usr/local/sbin"
cp "$VM_MODULES"/*.ko "$root/usr/local/lib/sited-vm/"
install -m 0755 "$HERE/guest/sited-vm-gpio.sh" "$root/usr/local/sbin/sited-vm-gpio"
install -m 0755 "$HERE/guest/systemd-site.sh" "$root/usr/local/sbin/sited-vm-test"
cat > "$root/etc/systemd/system/sited-vm-gpio.service" <<'UNIT'
[Unit]
Description=gpio-sim and a test PWM chip standing in for the Pi's
DefaultDependencies=no
After=systemd-udevd.service sys-kernel-config.mount
Before=sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/sited-vm-gpio
[Install]
WantedBy=sysinit.target
UNIT
cat > "$root/etc/systemd/system/sited-vm-test.service" <<'UNIT'
[Unit]
Description=sited package test
After=multi-user.target
[Service]
# Not oneshot: it waits for the boot to finish, which would wait for it.
Type=simple
ExecStart=/usr/local/sbin/sited-vm-test
StandardOutput=null
[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$root/etc/systemd/system/sysinit.target.wants" "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/sited-vm-gpio.service "$root/etc/systemd/system/sysinit.target.wants/"
ln -sf /etc/systemd/system/sited-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/"
# No getty on the consoles: the test owns ttyS1, and the console only shows the boot.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS1.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
mkfs.ext4 -q -F -L root -d "$root" "$work/root.img" 2G

# ---- the initramfs: just enough to mount the disk (Debian builds virtio and ext4 as modules) ------
init="$work/init"
mkdir -p "$init"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$VM_BUSYBOX" "$init/bin/busybox"
ln -s busybox "$init/bin/sh"
cp "$VM_BOOT_MODULES"/*.ko "$init/lib/modules/"
cat > "$init/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $(cat "$VM_BOOT_MODULES/order"); do /bin/busybox insmod /lib/modules/\$m.ko; done
n=0; while [ ! -b /dev/vda ] && [ \$n -lt 100 ]; do /bin/busybox usleep 50000; n=\$((n + 1)); done
/bin/busybox mount -t ext4 /dev/vda /newroot || { echo "cannot mount /dev/vda"; /bin/busybox poweroff -f; }
exec /bin/busybox switch_root /newroot /sbin/init
INIT
chmod 755 "$init/init"
(cd "$init" && find . | "$VM_BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")

# ---- the VM -------------------------------------------------------------------------------------
console="$OUT/systemd-site.console.log"
results="$OUT/systemd-site.log"
start=$SECONDS
# shellcheck disable=SC2086
LD_LIBRARY_PATH="$VM_QEMU_LIBS" timeout 600 "$VM_QEMU" $VM_QEMU_BIOS \
  -M pc -nic none -accel tcg,thread=multi -cpu max -smp 2 -m 1024 -nographic -no-reboot \
  -kernel "$VM_KERNEL" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet loglevel=3 systemd.show_status=0" \
  -drive "file=$work/root.img,if=virtio,format=raw" \
  -serial "file:$console" -serial "file:$results" -monitor none > /dev/null 2>&1 || true
took=$((SECONDS - start))
grep -a -E '^(ok|not ok) - |^    |^system: |^systemd-analyze security' "$results" | tr -d '\r' || true
result=$(grep -a '^VM-RESULT' "$results" | tr -d '\r' || true)
echo "systemd-site: ${result:-no result (the VM did not finish; see $console and $results)} in ${took} s"
[[ "$result" =~ ^VM-RESULT\ pass=[1-9][0-9]*\ fail=0$ ]] || { tail -n 40 "$results" "$console" >&2; exit 1; }
