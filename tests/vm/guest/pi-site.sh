#!/bin/busybox sh
# /init of the emulated Raspberry Pi 3 (qemu raspi3b; tests/vm/pi-site.sh builds it): sited from
# the arm64 package with the shipped config, on the rppal backend through /dev/mem
# (iomem=relaxed; Debian's kernel has no /dev/gpiomem). qemu's GPIO model has no inputs, no
# pulls and no edges: input levels are set in GPSET0 before sited starts, and outputs are read
# back in the level register GPLEV0.
# Prints "ok - ..." / "not ok - ..." and "VM-RESULT pass=N fail=M", then powers off.
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /run /var/lib/sited /var/log/sited
mount -t tmpfs run /run
insmod /lib/modules/bcm2835_wdt.ko          # without it, poweroff halts instead of ending qemu
ifconfig lo 127.0.0.1 up

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
notok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; fi; }
wait_until() { limit=$(($1 * 20)); shift; while [ "$limit" -gt 0 ]; do "$@" && return 0; limit=$((limit - 1)); usleep 50000; done; return 1; }
finish() { echo "---- sited's log"; cat /tmp/sited.log; echo "VM-RESULT pass=$PASS fail=$FAIL"; poweroff -f; }

GPIO=0x3f200000
GPSET0=$((GPIO + 0x1c))
GPLEV0=$((GPIO + 0x34))
lev() { echo $(( $(devmem $GPLEV0 32) >> $1 & 1 )); }     # lev BCM -> 0|1
is() { [ "$(lev "$1")" = "$2" ]; }
# Inputs before start: both buttons and the lock switch open (high); the office door shut (low);
# the emergency door OPEN (high), so the site must sound the siren at start.
devmem $GPSET0 32 $(( (1 << 5) | (1 << 6) | (1 << 21) | (1 << 16) ))
echo "GPLEV0 before start: $(devmem $GPLEV0 32)"

sited --config /etc/sited/sited.toml > /tmp/sited.log 2>&1 &
SITED=$!
if ! wait_until 30 sh -c 'sitectl status >/dev/null 2>&1'; then notok "sited started"; finish; fi
ok "sited started with the shipped config"

check "auto picked rppal" sh -c 'sitectl status | grep -q "^backend: rppal$"'
check "status: board: Raspberry Pi 3 Model B" sh -c 'sitectl status | grep -q "^board: Raspberry Pi 3 Model B (read "'
check "the log says why" grep -q 'hardware: Raspberry Pi 3 Model B, so backend = "auto" uses rppal' /tmp/sited.log
check "input levels set before start are read (buttons released, emergency door open)" \
	sh -c 'sitectl status | grep -q "^entry_button .* released" && sitectl status | grep -q "^emergency_door .* open"'
check "an open emergency door at start sounds the siren (GPLEV0 bit 22)" wait_until 5 is 22 1
check "sitectl set entry_led on: GPLEV0 bit 17 set" sh -c 'sitectl set entry_led on >/dev/null && [ $(( $(devmem '$GPLEV0' 32) >> 17 & 1 )) = 1 ]'
check "sitectl set entry_led off: bit 17 clear" sh -c 'sitectl set entry_led off >/dev/null && [ $(( $(devmem '$GPLEV0' 32) >> 17 & 1 )) = 0 ]'
check "sitectl set office_light on: GPLEV0 bit 24 set" sh -c 'sitectl set office_light on >/dev/null && [ $(( $(devmem '$GPLEV0' 32) >> 24 & 1 )) = 1 ]'
echo "GPLEV0 running: $(devmem $GPLEV0 32)"
kill -TERM $SITED
wait $SITED
check "SIGTERM: sited exits 0" [ $? = 0 ]
echo "GPLEV0 after stop: $(devmem $GPLEV0 32)"
for bcm in 17 27 22 23 24 25; do
	check "SIGTERM: GPIO $bcm low in GPLEV0" is $bcm 0
done
finish
