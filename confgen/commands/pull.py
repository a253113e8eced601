"""confgen pull MODEL...: a catalog model's weights into the HuggingFace cache the vLLM container mounts."""

from __future__ import annotations

import os

import click

from confgen.catalog import select
from confgen.commands import project_from
from confgen.runtime import pull


@click.command("pull")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.pass_context
def command(ctx: click.Context, models: tuple[str, ...]) -> int:
    """Download the weights of each MODEL (a file in models/, without .yml) into $HF_CACHE/hub
    (default ~/.cache/huggingface/hub), with a progress bar per file and overall. An interrupted pull goes
    on where it stopped; it checks the free disk first, and refuses a gated model without secrets/HF_TOKEN.
    HF_ENDPOINT picks another hub (a mirror)."""
    project = project_from(ctx)
    environ = dict(os.environ)
    selection = select(project, list(models), environ, source="confgen pull")
    pull.pull(project, list(selection.models), environ)
    return 0
