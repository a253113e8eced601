#!/usr/bin/env bash
# Start the gateway: ./runMe.sh [up [--monitoring]|stop|status|logs [vllm|litellm|prometheus]|install|doctor|pull MODEL...]
#   ./runMe.sh <confgen command> runs confgen (keys, usage, plan, check, ...) from the project venv
#   (MODEL=name picks a model; MONITORING=1 or --monitoring also starts Prometheus)
# Thin on purpose: it makes the project venv once, then hands over to `python -m confgen`.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found: install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 3
fi

stamp=.venv/.confgen-stamp
want=$(cat pyproject.toml requirements/gateway.txt requirements/gateway.lock | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing the gateway into .venv (first run: a few minutes; log: run/logs/install-gateway.log)"
  mkdir -p run/logs
  {
    "$python" -m venv .venv &&
      .venv/bin/pip install -q -c requirements/gateway.lock -r requirements/gateway.txt -e .
  } >>run/logs/install-gateway.log 2>&1 || {
    echo "error: installing the gateway failed: see run/logs/install-gateway.log" >&2
    exit 3
  }
  echo "$want" >"$stamp"
fi

case "${1:-up}" in
  up | start) shift || true; exec .venv/bin/python -m confgen up "$@" ;;
  stop | status | logs | install) exec .venv/bin/python -m confgen "$@" ;;
  -h | --help | help) sed -n '2,4p' "$0" | sed 's/^# //'; exit 0 ;;
  # Anything else is a confgen command (./runMe.sh keys create ..., ./runMe.sh plan, ./runMe.sh check).
  *) exec .venv/bin/python -m confgen "$@" ;;
esac
