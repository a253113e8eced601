"""confgen render: write models.yml and the LiteLLM config.yaml for a selection of models."""

from __future__ import annotations

from pathlib import Path

import click

from confgen.catalog import select
from confgen.commands import model_option, project_from
from confgen.render import write_all


@click.command("render")
@model_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write models.yml and config.yaml into (created if missing).")
@click.pass_context
def command(ctx: click.Context, models: tuple[str, ...], out: Path) -> int:
    """Render the generated configs for the selected models."""
    for path in write_all(select(project_from(ctx), list(models)), out):
        click.echo(f"wrote {path}")
    return 0
