#!/usr/bin/env bash
# Installs a pinned django-scim2 (a SCIM 2.0 server implementation for
# Django, from PyPI; independent of scim2-server) into a Python venv at
# <repo>/.tools/django-scim2 and prints the venv's python on stdout (all other
# output goes to stderr). The tests serve it through the small Django project
# in scripts/django-scim2/ (tests/all/support/django_scim2.rs):
#   TETHER_SCIM_DB=... TETHER_SCIM_TOKEN=... <python> scripts/django-scim2/manage.py migrate
#   ... <python> scripts/django-scim2/manage.py runserver --noreload 127.0.0.1:N
#
# Idempotent and concurrency-safe (flock); when already installed it only
# checks a stamp file. Like install-scim2-server.sh: a venv with pip, or the
# system's pip into a venv made without it, or Debian's python3-venv first.
set -euo pipefail

REQUIREMENTS="
django-scim2==0.23.0
Django==5.2.19
asgiref==3.13.0
sqlparse==0.6.1
scim2-filter-parser==0.7.0
sly==0.5
"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/django-scim2"
PY="$VENV/bin/python"
STAMP="$VENV/.installed-$(printf '%s' "$REQUIREMENTS" | cksum | cut -d' ' -f1)"

if [[ -f "$STAMP" && -x "$PY" ]]; then
  echo "$PY"
  exit 0
fi
log() { echo "install-django-scim2: $*" >&2; }
mkdir -p "$TOOLS"
exec 9>"$TOOLS/.django-scim2.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ -f "$STAMP" && -x "$PY" ]]; then
  echo "$PY"
  exit 0
fi

PYTHON="${TETHER_PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { log "$PYTHON is not a Python >= 3.10 (Django 5.2 needs one); set TETHER_PYTHON"; exit 1; }
log "installing django-scim2 into $VENV with $PYTHON"
REQ_FILE="$(mktemp)"
trap 'rm -f "$REQ_FILE"' EXIT
printf '%s\n' "$REQUIREMENTS" | sed '/^$/d' >"$REQ_FILE"
PIP_FLAGS=(--quiet --disable-pip-version-check --no-input --no-warn-script-location -r "$REQ_FILE")
fresh_venv() { rm -rf "$VENV"; "$PYTHON" -m venv "$@" "$VENV" >&2; }
with_venv_pip() { fresh_venv && "$PY" -m pip install "${PIP_FLAGS[@]}" >&2; }
with_system_pip() {
  "$PYTHON" -m pip --version >/dev/null 2>&1 || return 1
  fresh_venv --without-pip || return 1
  local site
  site="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || return 1
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --target "$site" "${PIP_FLAGS[@]}" >&2
}
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }

if "$PYTHON" -c 'import ensurepip' 2>/dev/null && with_venv_pip; then
  :
elif with_system_pip; then
  :
elif command -v apt-get >/dev/null; then
  log "no pip at all; installing Debian's python3-venv"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv python3-pip >&2
  with_venv_pip || with_system_pip || { log "install failed"; exit 1; }
else
  log "cannot make a venv with pip: install python3-venv (Debian) or pip for $PYTHON"
  exit 1
fi

"$PY" -c 'import django_scim, django' || { log "django-scim2 does not import"; exit 1; }
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "$PY"
