"""confgen up | stop | status | logs: the local stack (what ./runMe.sh calls)."""

from __future__ import annotations

import os

import click

from confgen.commands import project_from
from confgen.runtime import stack


@click.command("up")
@click.option("--timeout", "deadline_s", type=click.FloatRange(min=1), default=600, show_default=True,
              envvar="CONFGEN_START_TIMEOUT", help="Seconds each part may take to become healthy.")
@click.option("--monitoring", is_flag=True, envvar="MONITORING",
              help="Also start Prometheus (Debian's package) on 127.0.0.1:$PROMETHEUS_PORT, scraping the "
                   "gateway and vLLM (MONITORING=1 does the same).")
@click.pass_context
def up(ctx: click.Context, deadline_s: float, monitoring: bool) -> int:
    """Start vLLM ($MODEL, default by hardware) and the gateway; wait until both are healthy."""
    return stack.up(project_from(ctx), dict(os.environ), deadline_s, with_prometheus=monitoring)


@click.command("stop")
@click.pass_context
def stop(ctx: click.Context) -> int:
    """Stop the local stack (gateway first, then vLLM)."""
    return stack.stop(project_from(ctx), dict(os.environ))


@click.command("status")
@click.pass_context
def status(ctx: click.Context) -> int:
    """Show each process, its health and its log. Exit 0 when all are healthy, 3 otherwise."""
    return stack.status(project_from(ctx), dict(os.environ))


@click.command("logs")
@click.argument("part", required=False, metavar="[PART]")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_context
def logs(ctx: click.Context, part: str | None, lines: int) -> int:
    """Print the end of each log (or of one part's). PART: vllm, litellm, prometheus, install or build
    for the local stack; a compose service (vllm-node, gateway, db) for the Docker deployment."""
    return stack.logs(project_from(ctx), dict(os.environ), part, lines)


@click.command("install")
@click.pass_context
def install(ctx: click.Context) -> int:
    """Install the CPU build of vLLM into .venv-vllm and build the CPU models' local weights (no start)."""
    return stack.install_cpu(project_from(ctx), dict(os.environ))


commands = (up, stop, status, logs, install)
