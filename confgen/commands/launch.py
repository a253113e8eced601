"""confgen launch claude|codex [-- ARGS]: start a coding agent on this gateway with the right environment."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.clients import launch
from confgen.clients.resolve import endpoint, key_lines
from confgen.commands import project_from
from confgen.commands.client import endpoint_options


@click.command("launch", context_settings={"ignore_unknown_options": True})
@click.argument("agent", type=click.Choice(list(launch.AGENTS)))
@endpoint_options
@click.option("--bin", "binary", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The client's executable.  [default: found on PATH]")
@click.option("--dry-run", is_flag=True, help="Check and print what would run (no key values), do not start it.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def command(ctx: click.Context, *, agent: str, models: tuple[str, ...], key_file: Path | None, master_key: bool,
            alias: str | None, base_url: str | None, ca_file: Path | None, binary: Path | None, dry_run: bool,
            args: tuple[str, ...]) -> int:
    """Make or reuse your key, check that the gateway answers, accepts it and serves the model, set the
    environment (base URL, key, models, output limit, attribution header off, no telemetry or updates, CA file
    for https) and exec the client with ARGS (after --). Refuses to start when any of it fails."""
    environ = dict(os.environ)
    exe = launch.find_binary(agent, binary, environ)
    ep, key = endpoint(project_from(ctx), environ, models=models, key_file=key_file, alias=alias,
                       base_url=base_url, ca_file=ca_file, master_key=master_key)
    for line in key_lines(key):
        click.echo(line, err=True)
    launch.preflight(ep, key.value)
    run = launch.plan(agent, ep, key.value, environ, binary=exe, args=args)
    launch.check_env(run)
    click.echo(f"launching {agent} ({exe}) on {ep.base_url}, model {ep.default.name} "
               f"(context {ep.default.context or 'not set'}, max output {ep.default.max_output})", err=True)
    if dry_run:
        shown = {name: ("***" if name in (ep.key.env, "ANTHROPIC_AUTH_TOKEN") else run.env[name])
                 for name in run.required}
        for name, value in shown.items():
            click.echo(f"{name}={value}")
        click.echo(" ".join(run.argv))
        return 0
    return launch.run(run)
