"""confgen doctor: every prerequisite with its state and the fix."""

from __future__ import annotations

import os

import click

from confgen.commands import project_from
from confgen.commands.output import echo_json, table
from confgen.doctor import worst
from confgen.doctor.report import run_all


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> int:
    """Check what ./runMe.sh needs: Python, disk for the venvs and the selected models' weights, ports,
    PostgreSQL, Redis; on a GPU host the driver, nvidia-smi, Docker, Compose v2 and the NVIDIA container runtime;
    the HF token for gated models. Exit 0 when all is well, 1 on a warning (the stack starts but degrades),
    3 on a failure (the start would fail)."""
    findings = run_all(project_from(ctx), dict(os.environ))
    code = worst(findings)
    if as_json:
        echo_json({"exit_code": code, "checks": [f.to_json() for f in findings]})
    else:
        click.echo(table(("CHECK", "STATE", "DETAIL", "FIX"), [[f.check, f.state, f.detail, f.fix] for f in findings]))
    return code
