#!/bin/bash
# Runs in the stock Debian systemd VM (tests/vm/systemd-site.sh builds it) as a service once the
# machine is up: installs the package as an owner would and checks it under real systemd, with
# no hand-made udev rule and no procps. gpio-sim stands in for the Pi's GPIO (a chip labelled
# pinctrl-bcm2835) and the test PWM chip for its PWM; sited-vm-gpio.service sets them up.
# Prints "ok - ..." / "not ok - ..." and "VM-RESULT pass=N fail=M" on ttyS1, then powers off.
exec > /dev/ttyS1 2>&1
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
notok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
check() { local name=$1; shift; if "$@" >/tmp/check.out 2>&1; then ok "$name"; else notok "$name"; sed 's/^/    /' /tmp/check.out | tail -n 15; fi; }
wait_until() { local limit=$(($1 * 20)); shift; while [ "$limit" -gt 0 ]; do "$@" && return 0; limit=$((limit - 1)); sleep 0.05; done; return 1; }
finish() {
	echo "---- journalctl -u sited (last 40 lines)"
	journalctl -u sited --no-pager -n 40
	echo "VM-RESULT pass=$PASS fail=$FAIL"
	systemctl poweroff
	exit 0
}

echo "system: $(systemctl is-system-running --wait 2>&1), $(systemd-analyze 2>&1 | head -n 1)"
G=/sys/kernel/config/gpio-sim/sim0
S=/sys/devices/platform/$(cat $G/dev_name)/$(cat $G/bank0/chip_name)
CHIP=/dev/$(cat $G/bank0/chip_name)
BASE=$(sed -n "s/^ *$(cat $G/bank0/chip_name): GPIOs \([0-9]*\)-.*/\1/p" /sys/kernel/debug/gpio)
T=/sys/kernel/tracing
pull() { echo "pull-$2" > "$S/sim_gpio$1/pull"; }
is() { [ "$(cat "$S/sim_gpio$1/value")" = "$2" ]; }
staff_is() { sitectl status 2>/dev/null | grep -q "^staff on premises: $1\$"; }

# ---- 1. apt install, then enable --now with the shipped config ----------------------------------
check "the machine has no procps (no /bin/kill) and no gpio udev rule" \
	bash -c '! command -v /usr/bin/kill && ! command -v /bin/kill && ! grep -rqs gpiochip /usr/lib/udev/rules.d /etc/udev/rules.d'
check "apt install ./sited.deb" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/sited.deb
check "the sited user, in the gpio and sited-operators groups" bash -c 'id -nG sited | grep -qw gpio && id -nG sited | grep -qw sited-operators'
check "the package's udev rule gave the gpio group the chip" wait_until 10 bash -c "[ \$(stat -c %G $CHIP) = gpio ] && [ \$(stat -c %a $CHIP) = 660 ]"
check "the PWM export file is the gpio group's too" bash -c '[ $(stat -c %G /sys/class/pwm/pwmchip0/export) = gpio ]'
check "the unit is enabled and not started" bash -c 'systemctl is-enabled -q sited && ! systemctl is-active -q sited'
check "/etc/sited is root:sited 0750, /var/lib/sited sited's" bash -c '[ "$(stat -c %U:%G:%a /etc/sited)" = root:sited:750 ] && [ "$(stat -c %U /var/lib/sited)" = sited ]'
check "man pages and completions are installed" bash -c 'test -f /usr/share/man/man8/sited.8* && test -f /usr/share/man/man1/sitectl-status.1* && test -f /usr/share/bash-completion/completions/sitectl'
# What an owner adapts to the wiring: here the VM's PWM chip, short doors, and the reeds without
# bias (gpio-sim keeps one pull per line, and the last write wins).
sed -i -e 's/^open-secs = .*/open-secs = 1.0/' \
	-e 's/^backend = "auto"/backend = "auto"\npwm-chip = "sited-test-pwm.0"/' \
	-e '/^name = "emergency_door"/,/^\[\[device\]\]/s/^pull = "up"/pull = "off"/' \
	-e '/^name = "office_door"/,/^\[\[device\]\]/s/^pull = "up"/pull = "off"/' /etc/sited/sited.toml
check "sitectl validate -c /etc/sited/sited.toml" sitectl validate -c /etc/sited/sited.toml
# A short watchdog, so the test does not wait 30 s for systemd to notice a hang.
mkdir -p /etc/systemd/system/sited.service.d
printf '[Service]\nWatchdogSec=3s\n' > /etc/systemd/system/sited.service.d/vm-test.conf
systemctl daemon-reload
check "systemctl enable --now sited" systemctl enable --now sited
check "sited is active (Type=notify: READY=1 came)" wait_until 20 systemctl is-active -q sited
check "backend auto picked cdev" bash -c 'sitectl status | grep -q "^backend: cdev$"'
check "the servos run as the sited user through the udev rule (not faulted)" bash -c '! sitectl status | grep -E "^(entry|exit)_door " | grep -q FAULTED'
check "... their PWM channels' files are the gpio group's" wait_until 10 bash -c '[ "$(stat -c %G /sys/class/pwm/pwmchip0/pwm0/period)" = gpio ] && [ "$(stat -c %G /sys/class/pwm/pwmchip0/pwm1/duty_cycle)" = gpio ]'

# ---- 2. who may use the socket -------------------------------------------------------------------
useradd -m -G sited-operators alice
useradd -m bob
check "root: sitectl status" sitectl status
check "a member of sited-operators: sitectl status" runuser -u alice -- sitectl status
check "a member of sited-operators may operate: sitectl set office_light on/off" \
	bash -c 'runuser -u alice -- sitectl set office_light on && runuser -u alice -- sitectl set office_light off'
check "a user outside it is refused" bash -c '! runuser -u bob -- sitectl status'
runuser -u bob -- sitectl status 2>&1 | head -n 1 | sed 's/^/    bob: /'

# ---- 7. the board line, read under the unit's sandbox --------------------------------------------
check "board: line read /proc/cpuinfo and /proc/version inside the sandbox" \
	bash -c 'sitectl status | grep "^board: not a Raspberry Pi" | grep "/proc/cpuinfo: no Model or Revision line" | grep -q "/proc/version: Linux "'

# ---- 3. an entry through the GPIO lines ----------------------------------------------------------
echo 1 > $T/events/gpio/gpio_value/enable
pull 5 down; sleep 0.1; pull 5 up
check "entry: the entry LED lights" wait_until 5 is 17 1
check "entry: staff on premises 1" wait_until 15 staff_is 1
check "sitectl log has the entry" bash -c 'sitectl log | grep -q "Staff member entered via access control"'
check "journalctl -u sited has the cycle" bash -c 'journalctl -u sited --no-pager | grep -q "access: entry cycle started"'

# ---- 4. reload, good and bad ---------------------------------------------------------------------
check "systemctl reload sited (good config)" systemctl reload sited
cp /etc/sited/sited.toml /root/sited.toml.good
echo 'this is = not [valid' >> /etc/sited/sited.toml
check "systemctl reload sited fails on a bad config" bash -c '! systemctl reload sited'
check "... sited keeps running the old one" systemctl is-active -q sited
check "... and the journal says why" bash -c 'journalctl -u sited --no-pager | grep -q "reload failed, keeping the running config"'
cp /root/sited.toml.good /etc/sited/sited.toml

# ---- 5. the watchdog -----------------------------------------------------------------------------
pid=$(systemctl show -p MainPID --value sited)
kill -STOP "$pid"
check "watchdog: a stopped sited is killed and restarted by systemd" \
	wait_until 40 bash -c "p=\$(systemctl show -p MainPID --value sited); [ -n \"\$p\" ] && [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && systemctl is-active -q sited"
check "... the journal names the watchdog" bash -c 'journalctl -u sited --no-pager | grep -qi "watchdog timeout"'
check "... and the count survived" wait_until 15 staff_is 1

# ---- 6. stop: every output safe ------------------------------------------------------------------
pull 20 up; sleep 0.2; pull 20 down          # the office busy: light and fan on
wait_until 5 is 24 1
echo > $T/trace
check "systemctl stop sited" systemctl stop sited
last_set() { grep "gpio_value: $(($BASE + $1)) set " $T/trace | tail -n 1 | sed 's/.* set //'; }
for line in 17 27 22 23 24 25; do
	check "stop: GPIO $line last written low (trace: $(last_set $line))" [ "$(last_set $line)" = 0 ]
done
systemctl start sited

# ---- 8. the sandbox's exposure -------------------------------------------------------------------
score=$(systemd-analyze security sited 2>/dev/null | sed -n 's/.*Overall exposure level for sited.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security sited: $score"
check "systemd-analyze security: exposure $score, at most 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'

# ---- 9. remove, then purge -----------------------------------------------------------------------
check "apt remove sited" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q sited
check "... stopped the unit" bash -c '! systemctl is-active -q sited'
check "... and kept the config, the count and the logs" bash -c 'test -f /etc/sited/sited.toml && test -f /var/lib/sited/state.json && test -d /var/log/sited'
check "apt purge sited" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q sited
check "... removed /etc/sited, /var/lib/sited and /var/log/sited" bash -c '! test -e /etc/sited && ! test -e /var/lib/sited && ! test -e /var/log/sited'
finish
