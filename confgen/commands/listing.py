"""confgen list: the catalog, one model a line."""

from __future__ import annotations

import click

from confgen.catalog import load_all
from confgen.commands import project_from


@click.command("list")
@click.pass_context
def command(ctx: click.Context) -> int:
    """List the models in the catalog with their size and where they run."""
    selection, problems = load_all(project_from(ctx))
    rows = [("NAME", "DEVICE", "PORT", "WEIGHTS", "NEEDS", "HF ID")]
    rows += [(m.name, m.info.device, str(m.port), f"{m.info.weights_gb:g} GB", f"{m.info.gpu_memory_gb:g} GB",
              m.hf_id) for m in selection.models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    return 1 if problems else 0
