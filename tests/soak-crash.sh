#!/usr/bin/env bash
# Soak: the crash test (tests/e2e/crash.rs) at length, on a release build. A hub and two door
# nodes run entry cycles while one of the three is killed with SIGKILL at random moments; each
# run checks that the nodes' completed cycles, the hub's count and its event log agree
# exactly, with no torn line and empty outboxes, and prints its figures.
#
#   bash tests/soak-crash.sh                 # 3 runs of 1,000 cycles with 30 kills each
#   RUNS=10 SITED_CRASH_CYCLES=5000 SITED_CRASH_KILLS=200 bash tests/soak-crash.sh
#   SITED_CRASH_SEED=12345 RUNS=1 bash tests/soak-crash.sh   # repeat a run by its seed
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
export SITED_CRASH_CYCLES=${SITED_CRASH_CYCLES:-1000}
export SITED_CRASH_KILLS=${SITED_CRASH_KILLS:-30}
cargo build --workspace --release --locked
cargo test --release --locked -p site-tests --test e2e --no-run
for run in $(seq "$runs"); do
  echo "== run $run of $runs"
  if ! out=$(cargo test --release --locked -q -p site-tests --test e2e -- crash:: --nocapture 2>&1); then
    echo "$out" | tail -40
    exit 1
  fi
  grep 'crash test:' <<<"$out"
done
