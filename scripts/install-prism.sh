#!/usr/bin/env bash
# Installs a pinned Stoplight Prism CLI into <repo>/.tools/prism and prints the
# path of its `prism` binary on stdout (all other output goes to stderr).
# Idempotent and concurrency-safe (flock); when already installed it only checks
# a stamp file and exits.
#
# Why 5.14.2 and the overrides: it is the newest prism-cli that supports node 20
# (5.15.x/5.16.x need node >= 24). Its deps on prism-core / prism-http-server
# are caret ranges that also match the node-24-only 5.15+/5.16 releases, so we
# pin the prism packages to the node-18/20 ones via npm "overrides".
set -euo pipefail

PRISM_VERSION=5.14.2
PRISM_CORE_VERSION=5.8.0
PRISM_HTTP_VERSION=5.12.0
PRISM_HTTP_SERVER_VERSION=5.12.2
MIN_NODE_MAJOR=18 # prism 5.14.2 declares engines.node >= 18.20.1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
DIR="$TOOLS/prism"
BIN="$DIR/node_modules/.bin/prism"
STAMP="$DIR/.installed-$PRISM_VERSION"

# Fast path: nothing to do.
if [[ -f "$STAMP" && -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

log() { echo "install-prism: $*" >&2; }

command -v node >/dev/null || { log "node is not installed (need node >= 18.20.1)"; exit 1; }
command -v npm >/dev/null || { log "npm is not installed"; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < MIN_NODE_MAJOR )); then
  log "node $(node --version) is too old; prism $PRISM_VERSION needs >= 18.20.1"
  exit 1
fi

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.prism.lock"
if command -v flock >/dev/null; then flock 9; fi

# Another process may have finished the install while we waited for the lock.
if [[ -f "$STAMP" && -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

STAGE="$(mktemp -d "$TOOLS/prism.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
chmod 755 "$STAGE"

cat >"$STAGE/package.json" <<EOF
{
  "name": "tether-prism-tool",
  "private": true,
  "dependencies": {
    "@stoplight/prism-cli": "$PRISM_VERSION"
  },
  "overrides": {
    "@stoplight/prism-core": "$PRISM_CORE_VERSION",
    "@stoplight/prism-http": "$PRISM_HTTP_VERSION",
    "@stoplight/prism-http-server": "$PRISM_HTTP_SERVER_VERSION"
  }
}
EOF

log "installing @stoplight/prism-cli@$PRISM_VERSION into $DIR"
# --engine-strict: fail loudly rather than install a dep that needs a newer node.
npm install --prefix "$STAGE" --no-audit --no-fund --engine-strict \
  --prefer-offline --loglevel=error >&2

got="$("$STAGE/node_modules/.bin/prism" --version 2>/dev/null || true)"
if [[ "$got" != "$PRISM_VERSION" ]]; then
  log "installed prism reports version '$got', expected $PRISM_VERSION"
  exit 1
fi

rm -rf "$DIR"
mv "$STAGE" "$DIR"
trap - EXIT
touch "$STAMP"
echo "$BIN"
