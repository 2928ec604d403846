#!/usr/bin/env bash
# Runs every test: builds the connectors and the test fixtures as wasm
# components, installs Stoplight Prism (spec validation) and scim2-server (a
# real SCIM server) and django-scim2 (a second one), and Debian's Chromium
# with chromedriver (the review page's browser tests), checks formatting and
# lints, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-guests.sh --fixtures
./scripts/install-prism.sh >/dev/null
./scripts/install-scim2-server.sh >/dev/null
./scripts/install-chromium.sh >/dev/null
./scripts/install-django-scim2.sh >/dev/null
./scripts/install-registry.sh >/dev/null

echo "checking formatting (cargo fmt --check) and lints (cargo clippy -D warnings)" >&2
for tool in rustfmt clippy; do
  cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$tool"
done
cargo fmt --all -- --check
for crate in connectors/*/ sdk/*/ tests/fixtures/*/; do
  if [[ -f "$crate/Cargo.toml" ]]; then (cd "$crate" && cargo fmt -- --check); fi
done
cargo clippy --workspace --all-targets --locked -- -D warnings

# The guest SDK and the connectors are workspaces of their own: their pure
# functions are unit-tested natively (no test calls a host import).
for crate in sdk/*/ connectors/*/; do
  (cd "$crate" && cargo clippy --all-targets --locked -- -D warnings && cargo test --locked)
done

cargo test --workspace --locked "$@"
