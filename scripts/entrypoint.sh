#!/bin/sh
# The vLLM node's entrypoint: the same path as the local stack (confgen/runtime/entrypoint.py):
# MODEL -> secrets -> configs in the shared volume -> exec `vllm serve` with the dynamic arguments.
# An unknown MODEL exits here with the list of known ones, before anything touches the GPU.
set -eu
exec python -m confgen --root /app exec-vllm --model "${MODEL:-glm47-flash}" --out /app/generated_configs "$@"
