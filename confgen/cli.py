"""The click layer: parse flags, call plain functions, turn ConfgenError into a message + exit code.

Exit codes: 0 ok, 1 invalid input, 2 usage, 3 failed launch or unexpected error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from confgen.commands import (
    check,
    client,
    command,
    compose,
    controller,
    doctor,
    exec_gateway,
    exec_vllm,
    health,
    k8s,
    keys,
    launch,
    listing,
    models,
    nginx,
    plan,
    prometheus,
    pull,
    render,
    routes,
    stack,
    usage,
)
from confgen.errors import ConfgenError


class _Group(click.Group):
    """Every subcommand returns an exit code; user errors become one message per problem."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            code = super().invoke(ctx)
        except ConfgenError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            ctx.exit(exc.exit_code)
        if isinstance(code, int) and code:
            ctx.exit(code)
        return code


def _default_root() -> Path:
    return Path(os.environ.get("CONFGEN_ROOT") or Path.cwd())


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=_default_root,
              show_default="$CONFGEN_ROOT or the current folder",
              help="Project folder holding models/, vars.env, the template and secrets/.")
@click.option("--check", "check_flag", is_flag=True, help="Same as `confgen check`.")
@click.pass_context
def cli(ctx: click.Context, root: Path, check_flag: bool) -> int:
    """One model catalog -> a validated vLLM + LiteLLM gateway."""
    if check_flag:
        return int(ctx.invoke(check.command))
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
    return 0


for _command in (check.command, listing.command, render.command, command.command, exec_vllm.command,
                 nginx.command, plan.command, prometheus.command, compose.command, exec_gateway.command,
                 health.command, keys.command, usage.command, k8s.command, routes.command, client.command,
                 launch.command, controller.command, models.command, pull.command, doctor.command,
                 *stack.commands):
    cli.add_command(_command)


def main() -> None:
    cli.main(prog_name="confgen")
