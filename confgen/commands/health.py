"""confgen health vllm|gateway: the containers' health checks (exit 0 healthy, 1 not)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.commands import project_from
from confgen.runtime import health


@click.command("health")
@click.argument("part", type=click.Choice(["vllm", "gateway"]))
@click.option("--model", envvar="MODEL", default="glm47-flash", show_default="$MODEL or glm47-flash",
              help="vllm: the model this node serves.")
@click.option("--out", envvar="CONFGEN_OUT", type=click.Path(path_type=Path, file_okay=False),
              default=Path("/app/generated_configs"), show_default="$CONFGEN_OUT or /app/generated_configs",
              help="vllm: where the node writes config.yaml.")
@click.pass_context
def command(ctx: click.Context, part: str, model: str, out: Path) -> int:
    """Check one part: vllm = config written and /v1/models lists the model (with the key);
    gateway = /health/liveliness answers."""
    project = project_from(ctx)
    environ = dict(os.environ)
    ok, detail = health.vllm(project, model, out, environ) if part == "vllm" else health.gateway(project, environ)
    click.echo(f"{'healthy' if ok else 'unhealthy'}: {detail}")
    return 0 if ok else 1
