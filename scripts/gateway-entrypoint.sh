#!/bin/sh
# The gateway's entrypoint: wait for the config the vLLM node wrote, secrets from /run/secrets into
# the environment, then exec LiteLLM (confgen/runtime/gateway_exec.py).
set -eu
exec python -m confgen --root /app exec-gateway --config /app/generated_configs/config.yaml "$@"
