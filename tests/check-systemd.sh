#!/usr/bin/env bash
# Checks systemd/sited.service: `systemd-analyze verify` must pass and `systemd-analyze
# security --offline=true` must rate it OK or better (exposure < 5.0).
# verify insists that the Exec lines' binaries exist, so it checks a copy of the unit whose
# /usr/bin/sited and /usr/bin/sitectl point at this build's (everything else is the shipped
# unit verbatim).
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/sited.service
bin="${SITED_BIN:-$PWD/target/debug/sited}"
ctl="$(dirname "$bin")/sitectl"
for b in "$bin" "$ctl"; do
  [ -x "$b" ] || { echo "check-systemd: $b missing: build first (cargo build --workspace)" >&2; exit 1; }
done
command -v systemd-analyze >/dev/null || { echo "check-systemd: systemd-analyze not found" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e "s#/usr/bin/sitectl#$ctl#g" -e "s#/usr/bin/sited #$bin #g" "$unit" > "$tmp/sited.service"
echo "systemd-analyze verify $unit (sited -> $bin, sitectl -> $ctl)"
if ! out=$(systemd-analyze verify "$tmp/sited.service" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  echo "check-systemd: verify failed" >&2
  exit 1
fi

line=$(systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure level')
echo "$line"
score=$(sed -E 's/.*: ([0-9.]+) .*/\1/' <<<"$line")
# systemd's scale: < 2.0 SAFE... OK below 5.0, then MEDIUM, EXPOSED, UNSAFE.
if ! awk -v s="$score" 'BEGIN { exit !(s < 5.0) }'; then
  echo "check-systemd: exposure $score is worse than OK" >&2
  exit 1
fi
