#!/usr/bin/env bash
# Runs every test: builds the connector and the test fixtures as wasm
# components, installs Stoplight Prism (spec validation), then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-guests.sh --fixtures
./scripts/install-prism.sh >/dev/null
./scripts/install-scim2-server.sh >/dev/null
cargo test --workspace --locked "$@"
