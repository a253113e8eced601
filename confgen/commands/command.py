"""confgen command: the final vLLM argv for one model, dynamic arguments applied."""

from __future__ import annotations

import shlex

import click

from confgen.catalog import select
from confgen.commands import project_from


@click.command("command")
@click.option("--model", required=True, metavar="NAME", help="A model from models/.")
@click.pass_context
def command(ctx: click.Context, model: str) -> int:
    """Print the vLLM command the launcher would exec (the API key comes from the environment)."""
    (resolved,) = select(project_from(ctx), [model]).models
    click.echo(shlex.join(resolved.argv))
    return 0
