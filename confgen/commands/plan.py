"""confgen plan: will these models fit this GPU, and with which vLLM memory flags?

Exit codes: 0 the selection fits, 1 it does not (or the input is invalid), 2 usage.
"""

from __future__ import annotations

import json

import click

from confgen.catalog import select
from confgen.commands import project_from
from confgen.errors import ConfgenError
from confgen.plan import load_gpus, plan_selection
from confgen.plan.report import as_dict, gpu_list, text
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


@click.command("plan")
@click.option("--gpu", metavar="NAME", help="GPU profile (see --list-gpus), e.g. dgx-spark.")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="A model from models/; repeat for several on the same GPU.")
@click.option("--context", callback=_tokens, default=None, metavar="TOKENS",
              show_default="each model's --max-model-len",
              help="Tokens per sequence for every model, e.g. 32k.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              show_default="each model's --max-num-seqs, else 1",
              help="Sequences of that length each model holds at once.")
@click.option("--fill/--no-fill", default=True, show_default=True,
              help="Share the spare memory out as KV room, or give each model just what it needs.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--list-gpus", is_flag=True, help="List the GPU profiles (shipped and gpus/*.yml) and exit.")
@click.pass_context
def command(ctx: click.Context, *, gpu: str | None, models: tuple[str, ...], context: int | None,
            concurrency: int | None, fill: bool, as_json: bool, list_gpus: bool) -> int:
    """Plan GPU memory: weights + KV cache for context x concurrency + overhead, per model.

    Prints each model's --gpu-memory-utilization, --max-model-len and --max-num-seqs; when the
    selection does not fit, by how much and what would. Exit 0 fits, 1 does not fit.
    """
    project = project_from(ctx)
    if list_gpus:
        gpus, problems = load_gpus(project)
        if problems:
            raise ConfgenError(problems)
        click.echo(gpu_list(gpus))
        return 0
    if not gpu:
        raise ConfgenError.one("--gpu", "no GPU profile given", "name one, e.g. --gpu dgx-spark; "
                               "confgen plan --list-gpus lists them", exit_code=2)
    result = plan_selection(select(project, list(models)), gpu, context, concurrency, fill=fill)
    click.echo(json.dumps(as_dict(result), indent=2) if as_json else text(result))
    return 0 if result.fits else 1
