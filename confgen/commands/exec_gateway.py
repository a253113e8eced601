"""confgen exec-gateway: the gateway container's entrypoint (reads the vLLM node's config, execs LiteLLM)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.commands import project_from
from confgen.runtime.gateway_exec import exec_gateway, prepare


@click.command("exec-gateway")
@click.option("--config", "config", envvar="CONFGEN_CONFIG", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("/app/generated_configs/config.yaml"), show_default="$CONFGEN_CONFIG or the tmpfs path",
              help="The LiteLLM config a vLLM node rendered into the shared volume.")
@click.option("--secrets", "secrets_dir", envvar="CONFGEN_SECRETS", type=click.Path(path_type=Path, file_okay=False),
              default=Path("/run/secrets"), show_default="$CONFGEN_SECRETS or /run/secrets",
              help="Folder of secret files (LITELLM_MASTER_KEY, VLLM_API_KEY, optional POSTGRES_PASSWORD).")
@click.option("--state", "state_dir", envvar="CONFGEN_STATE", type=click.Path(path_type=Path, file_okay=False),
              default=Path("/app/state"), show_default="$CONFGEN_STATE or /app/state",
              help="Persistent folder for the ledger's spool and the key snapshot (a volume).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=120, show_default=True,
              help="Seconds to wait for the config to appear.")
@click.pass_context
def command(ctx: click.Context, *, config: Path, secrets_dir: Path, state_dir: Path, wait_s: float) -> int:
    """Wait for the rendered config, load secrets from files, prepare the database (migrations), then
    replace this process with LiteLLM."""
    launch = prepare(project_from(ctx), config, secrets_dir, dict(os.environ), wait_s=wait_s, state_dir=state_dir)
    exec_gateway(launch, config.parent)
    return 0  # not reached: exec replaced the process
