#!/usr/bin/env bash
# Builds what the demo needs (the wasm toolchain included) and runs
# `tether demo`: a simulated Asana org synced through the connector
# component into tether-demo.db. Extra arguments go to `tether demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-guests.sh
cargo build --locked -p tether-host
exec ./target/debug/tether demo "$@"
