#!/usr/bin/env bash
# Installs Debian's Chromium and its chromedriver, which the `tether report`
# tests drive headless (tests/all/support/browser.rs) to check the review
# page in a real browser. Prints nothing on stdout; progress goes to stderr.
#
# Idempotent: when both are on PATH it only checks that they start. Needs
# root (or passwordless sudo) and apt-get the first time; elsewhere, install
# chromium and chromedriver yourself, or point TETHER_CHROMIUM and
# TETHER_CHROMEDRIVER at them.
set -euo pipefail

log() { echo "install-chromium: $*" >&2; }

chromium_bin="${TETHER_CHROMIUM:-$(command -v chromium || true)}"
driver_bin="${TETHER_CHROMEDRIVER:-$(command -v chromedriver || true)}"

if [[ -z "$chromium_bin" || -z "$driver_bin" ]]; then
  as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
  if ! command -v apt-get >/dev/null; then
    log "no apt-get: install chromium and chromedriver, or set TETHER_CHROMIUM and TETHER_CHROMEDRIVER"
    exit 1
  fi
  log "installing Debian's chromium and chromium-driver"
  # The package lists may be missing on a fresh image; a failed update
  # (offline mirror) still leaves the install to try what is there.
  as_root apt-get update -qq >&2 || log "apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
  chromium_bin="$(command -v chromium)"
  driver_bin="$(command -v chromedriver)"
fi

"$chromium_bin" --version >&2
"$driver_bin" --version >&2
