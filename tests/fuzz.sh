#!/usr/bin/env bash
# Fuzzes everything a stranger or a careless edit can feed sited: the hub's line parser, the
# datagram parser, the JSON reading parser, the control-request parser and the config loader
# (tests/fuzz/fuzz_targets/), each for FUZZ_SECS seconds (30 by default) with libFuzzer and
# AddressSanitizer, via cargo-fuzz on the nightly toolchain. A crash fails the run and leaves
# its input in tests/fuzz/artifacts/<target>/; it then becomes a regression test. The corpus
# grows in a cache outside the repository, so each run starts where the last one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-30}
targets=(hub_line datagram json_reading control_request config)
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is not installed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/sited-fuzz
export CARGO_TARGET_DIR=$cache/target
cargo +nightly fuzz build --fuzz-dir tests/fuzz
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$cache/corpus/$t"
  log=$(mktemp)
  if ! cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "$cache/corpus/$t" "tests/fuzz/seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: $t found a crash; its input is in tests/fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  corpus=$(find "$cache/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %10s executions in %s s, corpus %s inputs, no crash' "$t" "${runs:-?}" "$secs" "$corpus")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
