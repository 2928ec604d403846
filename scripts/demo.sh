#!/usr/bin/env bash
# The demo: builds what it needs (the wasm toolchain included), starts the
# Asana simulator on 127.0.0.1, syncs it through the connector component
# with `tether sync` into tether-demo.db, and prints the summary beside the
# fewest requests any connector could make for that org.
#
#   scripts/demo.sh [--users N] [--teams N] [--workspaces N] [--seed S] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
out=tether-demo.db
sim_args=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    *) sim_args+=("$1"); shift ;;
  esac
done

./scripts/build-guests.sh
# With the test targets: the dev-dependencies then add the same features
# (reqwest json, syn fold) as in `cargo test`, so the demo and the tests
# share one build of wasmtime and the rest instead of two.
cargo build --locked -p tether-host -p asana-sim --bins --tests

state="$(mktemp -d)"
sim_pid=
cleanup() { [[ -n "$sim_pid" ]] && kill "$sim_pid" 2>/dev/null; rm -rf "$state"; }
trap cleanup EXIT
./target/debug/asana-sim --port 0 --url-file "$state/url" "${sim_args[@]}" >&2 &
sim_pid=$!
# Wait until it listens: it writes the file once bound (or it exits).
until [[ -s "$state/url" ]]; do
  kill -0 "$sim_pid" 2>/dev/null || { echo "demo: the simulator did not start" >&2; exit 1; }
  sleep 0.05
done
url="$(sed -n 1p "$state/url")"
minimum="$(sed -n 2p "$state/url")"
addr="${url#http://}"; addr="${addr%%/*}"

SIM_TOKEN=sim-token ./target/debug/tether sync \
  --connector target/wasm/tether-asana.wasm \
  --config "asana-api-url=$url" --secret token=env:SIM_TOKEN --allow-host "$addr" \
  --out "$out"
echo "  minimum requests    $(printf '%8s' "$minimum")   (for this org at 100 per page, by any connector)"
echo
echo "  query it:  sqlite3 $out 'select resource_type, count(*) from resources group by 1'"
echo "             ./target/debug/tether inspect $out grants --type team"
