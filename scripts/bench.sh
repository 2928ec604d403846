#!/usr/bin/env bash
# Prints the sync and module-load figures of issue 9 beside their bounds
# (not timed tests). Builds what it needs first.
#
#   scripts/bench.sh             debug build: 1k and 10k users at 0, 100, 300 ms
#   scripts/bench.sh --release   optimised build (slow to compile the first time)
#   scripts/bench.sh --big       adds 100k users / 2,000 teams (minutes)
#   other flags go to the sync bench: --concurrency N, --rate PER_MINUTE, --latencies 0,100
# By default the simulator allows Asana's 1,500 requests/minute and tether uses
# the limits the connector declares; --rate 1000000 measures Tether unbounded.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dev
args=()
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    *) args+=("$arg") ;;
  esac
done
[[ -f target/wasm/tether-asana.wasm ]] || ./scripts/build-guests.sh --fixtures
# --tests: the same features as the test build (see demo.sh), so one build serves both.
cargo build --locked --profile "$profile" -p tether-host -p asana-sim --bins --tests
echo "== module load (first compile, cached load, one more instance)"
cargo bench --locked --profile "$profile" -p tether-host --bench module_load
echo "== sync"
cargo bench --locked --profile "$profile" -p tether-host --bench sync_scale -- "${args[@]}"
