"""confgen exec-vllm: the container entrypoint (and the local stack's vLLM process)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.commands import project_from
from confgen.runtime.entrypoint import exec_vllm, prepare


@click.command("exec-vllm")
@click.option("--model", envvar="MODEL", default="glm47-flash", show_default="$MODEL or glm47-flash",
              help="The model to serve.")
@click.option("--out", envvar="CONFGEN_OUT", type=click.Path(path_type=Path, file_okay=False),
              default=Path("/app/generated_configs"), show_default="$CONFGEN_OUT or /app/generated_configs",
              help="Shared folder for models.yml and config.yaml (tmpfs in containers).")
@click.option("--route", "routes", envvar="GATEWAY_MODELS", multiple=True, metavar="NAME",
              show_default="$GATEWAY_MODELS (space-separated) or MODEL alone",
              help="A model the gateway config routes to (repeat; a multi-model deployment names all).")
@click.option("--vllm-args", envvar="CONFGEN_VLLM_ARGS", default="", metavar="'--FLAG VALUE ...'",
              show_default="$CONFGEN_VLLM_ARGS",
              help="vLLM flags that replace the model file's (e.g. the planner's --gpu-memory-utilization share).")
@click.pass_context
def command(ctx: click.Context, model: str, out: Path, routes: tuple[str, ...], vllm_args: str) -> int:
    """Render configs for MODEL, then replace this process with `vllm serve ...`."""
    exec_vllm(prepare(project_from(ctx), model, out, dict(os.environ), routes=routes, vllm_args=vllm_args))
    return 0  # not reached: exec replaced the process
