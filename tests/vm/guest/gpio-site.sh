#!/bin/busybox sh
# /init of the gpio-sim VM (tests/vm/gpio-site.sh builds it): the real kernel's GPIO character
# devices and sysfs PWM, with sited from the package, playing the seed-000 site.
#   - Two gpio-sim chips: a decoy first, then one labelled like a Pi 1-3's ("pinctrl-bcm2835"),
#     so sited must choose by label, not by number.
#   - Two test-only PWM chips, a decoy at pwmchip0 and the servos' at pwmchip4, chosen by
#     `[hardware] pwm-chip = "sited-test-pwm.1"` (its device); the kernel's pwm_apply and gpio_value trace
#     events record every write, because gpio-sim returns a released line to its pull and only
#     the trace shows what sited wrote before it let go.
#   - Inputs are driven through gpio-sim's sim_gpioN/pull (pull-down = the contact closed to
#     ground). gpio-sim keeps one pull per line and the last write wins, so the reeds run with
#     `pull = "off"`: a bias request from sited would otherwise override the door's state.
# Prints "ok - ..." or "not ok - ..." per check and "VM-RESULT pass=N fail=M" at the end.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /run /var/lib/sited /var/log/sited
mount -t tmpfs run /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
ifconfig lo 127.0.0.1 up        # the door modules report to the hub over loopback
insmod /lib/modules/configfs.ko
mount -t configfs configfs /sys/kernel/config
insmod /lib/modules/gpio-sim.ko
insmod /lib/modules/sited-test-pwm.ko chips=2

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
notok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else notok "$name"; fi; }
finish() {
	for log in /tmp/sited*.log; do echo "---- $log"; cat "$log"; done
	echo "VM-RESULT pass=$PASS fail=$FAIL"
	poweroff -f
}
# wait_until SECONDS COMMAND...: polls every 50 ms.
wait_until() {
	limit=$(($1 * 20)); shift
	while [ "$limit" -gt 0 ]; do
		"$@" && return 0
		limit=$((limit - 1))
		usleep 50000
	done
	return 1
}

# ---- the chips ----------------------------------------------------------------------------------
G=/sys/kernel/config/gpio-sim/sim0
mkdir $G $G/bank0 $G/bank1
echo 8 > $G/bank0/num_lines
echo decoy-expander > $G/bank0/label
echo 54 > $G/bank1/num_lines
echo pinctrl-bcm2835 > $G/bank1/label
echo 1 > $G/live
CHIP=$(cat $G/bank1/chip_name)
S=/sys/devices/platform/$(cat $G/dev_name)/$CHIP
BASE=$(sed -n "s/^ *$CHIP: GPIOs \([0-9]*\)-.*/\1/p" /sys/kernel/debug/gpio)
echo "chips: $(cat $G/bank0/chip_name) (decoy-expander), $CHIP (pinctrl-bcm2835, GPIO base $BASE)"

pull() { echo "pull-$2" > "$S/sim_gpio$1/pull"; }          # pull LINE up|down
value() { cat "$S/sim_gpio$1/value"; }
is() { [ "$(value "$1")" = "$2" ]; }                      # is LINE 0|1
# Inputs at rest before sited starts: buttons and switch open (high), doors shut (low).
for line in 5 6 21; do pull $line up; done
for line in 16 20; do pull $line down; done

T=/sys/kernel/tracing
echo 1 > $T/events/gpio/gpio_value/enable
echo 1 > $T/events/pwm/pwm_apply/enable

# ---- the shipped config, as far as a VM can run it ----------------------------------------------
mkdir -p /etc/sited
sed -e 's/^open-secs = .*/open-secs = 1.0/' \
    -e 's/^backend = "auto"/backend = "auto"\npwm-chip = "sited-test-pwm.1"/' \
    -e '/^name = "emergency_door"/,/^\[\[device\]\]/s/^pull = "up"/pull = "off"/' \
    -e '/^name = "office_door"/,/^\[\[device\]\]/s/^pull = "up"/pull = "off"/' \
    /usr/share/sited-vm/sited.toml > /etc/sited/sited.toml
grep -q '^backend = "auto"' /etc/sited/sited.toml && ok "the shipped config asks for backend = auto" \
	|| notok "the shipped config asks for backend = auto"

sited --config /etc/sited/sited.toml > /tmp/sited.log 2>&1 &
SITED=$!
ctl() { sitectl "$@"; }
status() { ctl status 2>/dev/null; }
if ! wait_until 20 test -S /run/sited/control.sock; then
	notok "sited started"
	finish
fi
ok "sited started"
staff_is() { status | grep -q "^staff on premises: $1\$"; }

# ---- backend and board --------------------------------------------------------------------------
check "auto picked cdev (not a Pi, GPIO chips present)" sh -c 'sitectl status | grep -q "^backend: cdev$"'
check "board line: not a Raspberry Pi, with what was read" sh -c 'sitectl status | grep -q "^board: not a Raspberry Pi (read /sys/firmware/devicetree/base/model: absent;.*/proc/cpuinfo: "'
check "the chip was chosen by label behind the decoy" grep -q "cdev backend on /dev/$CHIP (\"pinctrl-bcm2835\"" /tmp/sited.log

# ---- safe outputs at start -----------------------------------------------------------------------
for line in 17 27 22 23 24 25; do
	check "output GPIO $line low at start" is $line 0
done
PWM=$(ls -d /sys/devices/platform/sited-test-pwm.1/pwm/pwmchip*)
check "the servos' PWM chip was chosen by its device, not its number ($(basename $PWM))" sh -c "grep -q 'servos use PWM chip $(basename $PWM) (sited-test-pwm.1)' /tmp/sited.log && [ ! -e /sys/class/pwm/pwmchip0/pwm0 ] && [ $(basename $PWM) != pwmchip0 ]"
CLOSED=$(cat $PWM/pwm0/duty_cycle)
# The servo plugin drives a door to its position and then stops pulsing (a servo holds still
# unpowered, and does not buzz), so the trace, not the enable file, shows the start.
check "both door servos driven to the closed pulse ($CLOSED ns) at start" sh -c "[ \$(grep -c 'pwm_apply: .* duty_cycle=$CLOSED .* enabled=1' $T/trace) -ge 2 ] && [ \$(cat $PWM/pwm1/duty_cycle) = $CLOSED ]"

# ---- the entry cycle ---------------------------------------------------------------------------
pull 5 down; usleep 100000; pull 5 up
check "entry: entry LED on" wait_until 5 is 17 1
check "entry: entry door servo moved" wait_until 5 sh -c "[ \$(cat $PWM/pwm0/duty_cycle) != $CLOSED ]"
pull 6 down; usleep 100000; pull 6 up
check "a press during the cycle is ignored and logged" wait_until 5 grep -q "pressed during an entry cycle; ignored" /tmp/sited.log
check "entry: exit LED on for the second door" wait_until 5 is 27 1
check "entry: staff on premises 1" wait_until 10 staff_is 1
check "entry: both LEDs off, doors closed again" wait_until 5 sh -c "[ \$(cat $S/sim_gpio17/value) = 0 ] && [ \$(cat $S/sim_gpio27/value) = 0 ] && [ \$(cat $PWM/pwm0/duty_cycle) = $CLOSED ]"

# ---- debounce: a burst of bounces is one press ----------------------------------------------------
for i in 1 2 3 4 5; do pull 6 down; pull 6 up; done
pull 6 down; usleep 100000; pull 6 up
check "exit: staff on premises back to 0" wait_until 10 staff_is 0
check "a burst of bounces started one exit cycle, not several" sh -c '[ $(grep -c "exit cycle started" /tmp/sited.log) = 1 ]'

# ---- the emergency exit --------------------------------------------------------------------------
pull 5 down; usleep 100000; pull 5 up
wait_until 10 staff_is 1
pull 16 up
check "emergency: the siren sounds" wait_until 5 is 22 1
check "emergency: the count goes to 0" wait_until 5 staff_is 0
check "emergency: both access doors released (servos open)" sh -c "[ \$(cat $PWM/pwm0/duty_cycle) != $CLOSED ] && [ \$(cat $PWM/pwm1/duty_cycle) != $CLOSED ]"
pull 16 down
check "emergency over: siren off" wait_until 5 is 22 0

# ---- the office -----------------------------------------------------------------------------------
pull 20 up; usleep 200000; pull 20 down
check "office: light on once the door closes behind you" wait_until 5 is 24 1
check "office: fan on" wait_until 5 is 25 1
pull 21 down
check "office: lock switch on locks the door" wait_until 5 is 23 1
pull 21 up
check "office: lock switch off unlocks it" wait_until 5 is 23 0
pull 20 up; usleep 200000; pull 20 down
check "office: light off when you leave" wait_until 5 is 24 0

# ---- reload ---------------------------------------------------------------------------------------
check "sitectl reload keeps it running" sh -c 'sitectl reload >/dev/null && sitectl status >/dev/null'
check "the event log has the entries, exits and the emergency" sh -c 'grep -c "Staff member" /var/log/sited/events.log | grep -q "^3$" && grep -q "Emergency exit opened" /var/log/sited/events.log'

# ---- the latency benchmark (sited.bench=N on the kernel command line; not run in CI) -----------
# N edges on the emergency door, 100 ms apart (past the reed's 50 ms debounce), each turning the
# siren on or off. Latency: from the kernel's interrupt for the edge (irq_handler_entry of
# sited's line request, the moment the cdev event is timestamped) to the siren's gpio_value
# write, both in the trace, on the same clock.
BENCH=$(sed -n 's/.*sited\.bench=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$BENCH" ]; then
	pull 16 down; wait_until 5 is 22 0
	echo 0 > $T/tracing_on; echo > $T/trace
	echo 8192 > $T/buffer_size_kb
	echo 1 > $T/events/irq/irq_handler_entry/enable
	echo 1 > $T/tracing_on
	i=0
	while [ $i -lt "$BENCH" ]; do
		if [ $((i % 2)) = 0 ]; then pull 16 up; else pull 16 down; fi
		usleep 100000
		i=$((i + 1))
	done
	wait_until 5 is 22 $((BENCH % 2))
	echo 0 > $T/tracing_on
	SIREN=$((BASE + 22))
	awk -v siren="$SIREN" '
		/irq_handler_entry: .*name=sited/ { t = $4; sub(":", "", t); edge = t; next }
		$0 ~ ("gpio_value: " siren " set ") && edge != "" { t = $4; sub(":", "", t); print (t - edge) * 1000000; edge = "" }
	' $T/trace | sort -n > /tmp/latency
	n=$(wc -l < /tmp/latency)
	p50=$(sed -n "$(( (n + 1) / 2 ))p" /tmp/latency)
	p99=$(sed -n "$(( (n * 99 + 99) / 100 ))p" /tmp/latency)
	max=$(tail -n 1 /tmp/latency)
	echo "BENCH edges=$BENCH measured=$n edge->siren p50=${p50}us p99=${p99}us max=${max}us"
	check "latency benchmark: every edge measured" [ "$n" -ge $((BENCH * 9 / 10)) ]
	pull 16 down
	echo 0 > $T/events/irq/irq_handler_entry/enable
	echo > $T/trace
	echo 1 > $T/tracing_on
fi

# ---- SIGTERM: every output to its safe level, as the kernel saw it --------------------------------
pull 20 up; usleep 200000; pull 20 down        # the office busy again: light and fan on
wait_until 5 is 24 1
pull 16 up                                      # and the siren sounding
wait_until 5 is 22 1
kill -TERM $SITED
check "SIGTERM: sited exits cleanly" wait_until 10 sh -c "! kill -0 $SITED 2>/dev/null"
wait $SITED
check "SIGTERM: exit status 0" [ $? = 0 ]
last_set() { grep "gpio_value: $(($BASE + $1)) set " $T/trace | tail -n 1 | sed 's/.* set //'; }
for line in 17 27 22 23 24 25; do
	check "SIGTERM: GPIO $line last written low (trace: $(last_set $line))" [ "$(last_set $line)" = 0 ]
done
check "SIGTERM: the servos were last set to the closed pulse" sh -c "[ \$(cat $PWM/pwm0/duty_cycle) = $CLOSED ] && [ \$(cat $PWM/pwm1/duty_cycle) = $CLOSED ]"

# ---- a PWM channel a kernel driver holds (as the Pi 5's fan holds one of pwmchip0's) ------------
echo 0 > $PWM/unexport; echo 1 > $PWM/unexport
rmmod sited-test-pwm
insmod /lib/modules/sited-test-pwm.ko chips=2 hold=1
pull 16 down
sited --config /etc/sited/sited.toml > /tmp/sited-held-channel.log 2>&1 &
SITED=$!
if wait_until 20 test -S /run/sited/control.sock && wait_until 5 sh -c 'sitectl status >/dev/null 2>&1'; then
	ok "sited starts with the exit door's channel held by a kernel driver"
else
	notok "sited starts with the exit door's channel held by a kernel driver"
fi
PWM=$(ls -d /sys/devices/platform/sited-test-pwm.1/pwm/pwmchip*)
check "status shows the exit door faulted with the real reason" sh -c 'sitectl status | grep "^exit_door " | grep -q "FAULTED .*channel in use by a kernel driver (\"test-fan\""'
check "... and the entry door is still driven" sh -c "[ \$(cat $PWM/pwm0/duty_cycle) = $CLOSED ]"
kill -TERM $SITED
wait $SITED
# Without debugfs (root only; sited runs as its own user under the unit) the chip's consumer
# links still say which kernel device it is.
umount /sys/kernel/debug
check "the chip's consumer link is there" test -L /sys/devices/platform/sited-test-pwm.1/consumer:platform:sited-test-fan
sited --config /etc/sited/sited.toml > /tmp/sited-held-no-debugfs.log 2>&1 &
SITED=$!
wait_until 20 sh -c 'sitectl status >/dev/null 2>&1'
check "without debugfs, status names the chip's kernel consumer" sh -c 'sitectl status | grep "^exit_door " | grep -q "FAULTED .*channel in use by a kernel driver (the chip.s kernel consumers: platform:sited-test-fan;"'
kill -TERM $SITED
wait $SITED
finish
