"""confgen compose: a compose file with one vLLM service per model and one gateway routing to all."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.catalog import select
from confgen.commands import model_option, project_from
from confgen.render import compose
from confgen.runtime.deployment import DEFAULT_GPU, plan_deployment
from confgen.sizes import parse_size


def _tokens(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        tokens = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if tokens < 1:
        raise click.BadParameter("must be at least 1 token")
    return tokens


@click.command("compose")
@model_option
@click.option("--gpu", envvar="CONFGEN_GPU", default=DEFAULT_GPU, show_default="$CONFGEN_GPU or dgx-spark",
              metavar="NAME", help="GPU profile the shares are planned for (confgen plan --list-gpus).")
@click.option("--context", callback=_tokens, default=None, metavar="TOKENS",
              show_default="each model's --max-model-len",
              help="Plan (and set --max-model-len) for this many tokens per sequence, e.g. 32k.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              show_default="each model's --max-num-seqs", help="Plan (and set --max-num-seqs) for this many sequences.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None, show_default="stdout",
              help="Write the file here (e.g. docker-compose.models.yml) instead of printing it.")
@click.pass_context
def command(ctx: click.Context, *, models: tuple[str, ...], gpu: str, context: int | None, concurrency: int | None,
            out: Path | None) -> int:
    """Write docker-compose.models.yml: one vLLM per model, each with its GPU memory share from the
    planner (a selection that does not fit is refused), one gateway routing to all, PostgreSQL."""
    project = project_from(ctx)
    deployment = plan_deployment(select(project, list(models), dict(os.environ)), gpu, context, concurrency)
    if out is None:
        click.echo(compose.render(project, deployment)[compose.OUTPUT], nl=False)
        return 0
    click.echo(f"wrote {compose.write(project, deployment, out)}", err=True)
    return 0
