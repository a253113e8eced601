"""confgen models: the on-demand models of the running stack and the state of each (from its controller)."""

from __future__ import annotations

import json
import os

import click
import httpx

from confgen.commands import project_from
from confgen.errors import LaunchError
from confgen.runtime.ondemand_stack import status_lines
from confgen.runtime.rundir import RunDir


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="The controller's status as JSON.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> int:
    """Show each on-demand model's state (stopped, starting, ready, sleeping, waking, stopping, failed)."""
    run = RunDir.for_root(project_from(ctx).root, dict(os.environ))
    state = run.read()
    controller = next((p for p in state.procs if p.name == "controller"), None) if state else None
    if controller is None:
        raise LaunchError("confgen models", "no on-demand controller is running",
                          "./runMe.sh starts one when deployments.yml has an on_demand section")
    if not as_json:
        click.echo("\n".join(line.strip() for line in status_lines(controller.url, run.path)))
        return 0
    from confgen.controller.api import fetch_status  # starlette: not in every venv the CLI runs in

    try:
        click.echo(json.dumps(fetch_status(controller.url, run.path), indent=2))
    except (OSError, httpx.HTTPError, ValueError) as exc:
        raise LaunchError("confgen models", f"the controller at {controller.url} did not answer: {exc}",
                          "see ./runMe.sh logs controller") from None
    return 0
