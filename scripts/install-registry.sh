#!/usr/bin/env bash
# Installs Debian's docker-registry (the CNCF distribution registry, v2.8)
# that the OCI distribution tests (tests/all/oci.rs) start on 127.0.0.1 with
# their own config.yml, and prints the binary's path on stdout (all other
# output goes to stderr). The package's own service is not started: the
# tests run a registry of their own, on a free port, storing in a temp dir.
#
# Idempotent and concurrency-safe (flock). TETHER_REGISTRY overrides the
# binary (any `registry serve CONFIG` of distribution v2.8 or later).
set -euo pipefail

if [[ -n "${TETHER_REGISTRY:-}" ]]; then
  [[ -x "$TETHER_REGISTRY" ]] || { echo "install-registry: TETHER_REGISTRY=$TETHER_REGISTRY is not executable" >&2; exit 1; }
  echo "$TETHER_REGISTRY"
  exit 0
fi

BIN=/usr/bin/docker-registry
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

log() { echo "install-registry: $*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }

command -v apt-get >/dev/null || { log "no apt-get: install the distribution registry and set TETHER_REGISTRY to its binary"; exit 1; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/.tools"
exec 9>"$ROOT/.tools/.registry.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ ! -x "$BIN" ]]; then
  log "installing Debian's docker-registry"
  as_root apt-get update -qq >&2
  # A policy-rc.d answering 101 keeps the package's service from starting:
  # the tests start their own registry.
  POLICY=/usr/sbin/policy-rc.d
  if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
    as_root chmod +x "$POLICY"
    trap 'as_root rm -f "$POLICY"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends docker-registry >&2
fi
[[ -x "$BIN" ]] || { log "$BIN is missing after the install"; exit 1; }
echo "$BIN"
