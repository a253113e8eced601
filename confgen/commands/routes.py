"""confgen routes: each deployment a running gateway routes to, and its health (GET /health)."""

from __future__ import annotations

import os

import click

from confgen.commands import project_from
from confgen.load import load_vars
from confgen.routing import status
from confgen.runtime import secret_files


@click.command("routes")
@click.option("--gateway", metavar="URL", default=None, show_default="http://LITELLM_HOST:LITELLM_PORT",
              help="The gateway to ask, e.g. http://10.0.0.5:4000 (any of several instances).")
@click.pass_context
def command(ctx: click.Context, gateway: str | None) -> int:
    """Show every replica of every model the gateway serves: healthy, or the error of its last probe.
    Uses the master key (secrets/LITELLM_MASTER_KEY). Exit 0 when all are healthy, 3 otherwise."""
    project = project_from(ctx)
    if gateway is None:
        settings = load_vars(project, dict(os.environ)).settings
        host = "127.0.0.1" if settings.LITELLM_HOST in {"0.0.0.0", "::", ""} else settings.LITELLM_HOST  # noqa: S104
        gateway = f"http://{host}:{settings.LITELLM_PORT}"
    key = secret_files.require(project, ("LITELLM_MASTER_KEY",))["LITELLM_MASTER_KEY"]
    states = status.fetch(gateway, key)
    click.echo(f"gateway {gateway}")
    for line in status.report(states):
        click.echo(line)
    return 0 if states and all(s.healthy for s in states) else 3
