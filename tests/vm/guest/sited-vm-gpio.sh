#!/bin/bash
# Stands in for a Raspberry Pi's GPIO and PWM in the systemd VM (sited-vm-gpio.service): gpio-sim
# with one chip labelled like a Pi 1-3's, and sited's test PWM chip. Inputs at rest: buttons and
# the lock switch open (high), both doors shut (low).
set -e
insmod /usr/local/lib/sited-vm/configfs.ko 2>/dev/null || true
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
insmod /usr/local/lib/sited-vm/gpio-sim.ko
insmod /usr/local/lib/sited-vm/sited-test-pwm.ko
G=/sys/kernel/config/gpio-sim/sim0
mkdir $G $G/bank0
echo 54 > $G/bank0/num_lines
echo pinctrl-bcm2835 > $G/bank0/label
echo 1 > $G/live
S=/sys/devices/platform/$(cat $G/dev_name)/$(cat $G/bank0/chip_name)
for line in 5 6 21; do echo pull-up > $S/sim_gpio$line/pull; done
for line in 16 20; do echo pull-down > $S/sim_gpio$line/pull; done
