#!/usr/bin/env bash
# Set up mlrec-luigi on a fresh machine: the virtualenv with every dependency.
#   bash scripts/setup.sh          the pipeline's venv (.venv)
#   bash scripts/setup.sh --test   also what the tests need: redis-server (apt), the
#                                  python3.13 venv for the mongoeco MongoDB server (.venv-mongoeco)
# Idempotent: a second call only checks. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch 2.13.0: a CPU build here (from this machine's local wheel store); see README "Set-up".
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
quiet_pip() {  # run a pip command; show its output only when it fails
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then grep -v "is ignored: it is neither a file nor a directory" "$log" >&2; rm -f "$log"; return 1; fi
  rm -f "$log"
}

stamp=.venv/.installed-$(cat setup.cfg | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  quiet_pip .venv/bin/pip install -q --upgrade pip
  quiet_pip .venv/bin/pip install -q "$TORCH_SPEC"
  quiet_pip .venv/bin/pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "${1:-}" = "--test" ]; then
  if ! command -v redis-server >/dev/null; then
    echo "setup: installing redis-server"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  fi
  if [ ! -x .venv-mongoeco/bin/python ] || ! .venv-mongoeco/bin/python -c "import mongoeco.wire.proxy" 2>/dev/null; then
    echo "setup: creating .venv-mongoeco (python3.13) for the mongoeco wire-protocol server"
    PY313=$(PYENV_VERSION=3.13.0 command -v python3.13 >/dev/null 2>&1 && echo python3.13 || true)
    [ -n "$PY313" ] || { echo "setup: python3.13 is required for the MongoDB wire tests (mongoeco)" >&2; exit 1; }
    PYENV_VERSION=3.13.0 python3.13 -m venv .venv-mongoeco
    quiet_pip .venv-mongoeco/bin/pip install -q "mongoeco[wire]==4.11.0"
  fi
fi
