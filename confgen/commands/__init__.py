"""One module per subcommand; each exposes `command`, a click command returning an exit code."""

from __future__ import annotations

from pathlib import Path

import click

from confgen.load import Project


def project_from(ctx: click.Context) -> Project:
    root: Path = ctx.find_root().params["root"]
    return Project(root.resolve())


model_option = click.option(
    "--model", "models", multiple=True, required=True, metavar="NAME",
    help="A model from models/ (file name without .yml); repeat for several.",
)
