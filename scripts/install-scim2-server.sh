#!/usr/bin/env bash
# Installs a pinned scim2-server (a real SCIM 2.0 server, from PyPI) into a
# Python venv at <repo>/.tools/scim2 and prints the venv's python on stdout
# (all other output goes to stderr). The tests run it as
#   <python> -m scim2_server.testserver.cli --hostname 127.0.0.1 --port N
# (tests/support/scim2.rs). scim2-server serves HTTP with the standard
# library's wsgiref, so it needs no web framework.
#
# Idempotent and concurrency-safe (flock); when already installed it only
# checks a stamp file and exits, without starting Python.
#
# How the venv is made, in order:
#   1. `python -m venv` (with pip): the normal case.
#   2. Where ensurepip is missing (Debian without python3-venv):
#      `python -m venv --without-pip`, then the system's pip installs into the
#      venv's site-packages with `pip install --target`.
#   3. Where there is no pip either: apt-get install python3-venv (as root, or
#      with passwordless sudo), then 1 again.
# TETHER_PYTHON picks the interpreter (default: the first of python3,
# python3.13, python3.12, python3.11 that is >= 3.11, which scim2-server needs).
set -euo pipefail

SCIM2_SERVER_VERSION=0.8.3
# Every package of the install, pinned (scim2-server and what it pulls in).
REQUIREMENTS="
scim2-server==$SCIM2_SERVER_VERSION
scim2-models==0.12.3
pydantic==2.14.4
pydantic_core==2.50.5
annotated-types==0.8.0
typing-inspection==0.4.5
typing_extensions==4.16.0
email-validator==2.4.0
dnspython==2.9.2
idna==3.20
lark==1.3.1
"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/scim2"
PY="$VENV/bin/python"
STAMP="$VENV/.installed-$SCIM2_SERVER_VERSION-$(printf '%s' "$REQUIREMENTS" | cksum | cut -d' ' -f1)"

# Fast path: nothing to do (-x is false for a dangling bin/python symlink too).
if [[ -f "$STAMP" && -x "$PY" ]]; then
  echo "$PY"
  exit 0
fi

log() { echo "install-scim2-server: $*" >&2; }

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.scim2.lock"
if command -v flock >/dev/null; then flock 9; fi

# Another process may have finished the install while we waited for the lock.
if [[ -f "$STAMP" && -x "$PY" ]]; then
  echo "$PY"
  exit 0
fi

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

pick_python() {
  if [[ -n "${TETHER_PYTHON:-}" ]]; then
    python_ok "$TETHER_PYTHON" || { log "TETHER_PYTHON=$TETHER_PYTHON is not a Python >= 3.11"; exit 1; }
    echo "$TETHER_PYTHON"
    return
  fi
  local candidate
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
      command -v "$candidate"
      return
    fi
  done
  log "no Python >= 3.11 found (scim2-server $SCIM2_SERVER_VERSION needs one); set TETHER_PYTHON"
  exit 1
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
can_be_root() { [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; }

PYTHON="$(pick_python)"
log "installing scim2-server $SCIM2_SERVER_VERSION into $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"

REQ_FILE="$(mktemp)"
trap 'rm -f "$REQ_FILE"' EXIT
printf '%s\n' "$REQUIREMENTS" | sed '/^$/d' >"$REQ_FILE"
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input --no-warn-script-location -r "$REQ_FILE")

fresh_venv() { rm -rf "$VENV"; "$PYTHON" -m venv "$@" "$VENV" >&2; }

install_with_venv_pip() {
  fresh_venv || return 1
  "$PY" -m pip install "${PIP_FLAGS[@]}" >&2
}

install_with_system_pip() {
  "$PYTHON" -m pip --version >/dev/null 2>&1 || return 1
  fresh_venv --without-pip || return 1
  local site
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || return 1
  # --target skips the externally-managed check of Debian's pip: it only
  # writes into the venv.
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --target "$site" "${PIP_FLAGS[@]}" >&2
}

if "$PYTHON" -c 'import ensurepip' 2>/dev/null && install_with_venv_pip; then
  :
elif log "no working 'python -m venv' with pip; trying the system's pip" && install_with_system_pip; then
  :
elif command -v apt-get >/dev/null && can_be_root; then
  log "no pip at all; installing Debian's python3-venv"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv python3-pip >&2
  install_with_venv_pip || install_with_system_pip || { log "install failed"; exit 1; }
else
  log "cannot make a venv with pip: install python3-venv (Debian) or pip for $PYTHON"
  exit 1
fi

got="$("$PY" -c 'import importlib.metadata as m; print(m.version("scim2-server"))' 2>/dev/null || true)"
if [[ "$got" != "$SCIM2_SERVER_VERSION" ]]; then
  log "the venv has scim2-server '$got', expected $SCIM2_SERVER_VERSION"
  exit 1
fi
"$PY" -c 'import scim2_server.testserver.cli' || { log "scim2_server.testserver.cli does not import"; exit 1; }

rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$PY"
