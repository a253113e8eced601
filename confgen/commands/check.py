"""confgen check (also `python -m confgen --check`): validate the whole catalog before any launch."""

from __future__ import annotations

import click

from confgen.catalog import load_all
from confgen.commands import project_from
from confgen.controller import plan as on_demand
from confgen.errors import ConfgenError
from confgen.plan.checks import plan_checks
from confgen.render import render_all
from confgen.routing.load import FILE_NAME
from confgen.routing.plan import plan_routes
from confgen.rules import secret_report
from confgen.vllm_check import check_commands


@click.command("check")
@click.option("--vllm/--no-vllm", "with_vllm", default=True, show_default=True,
              help="Also parse every command with vLLM's own argument parser, where vLLM is installed.")
@click.pass_context
def command(ctx: click.Context, with_vllm: bool) -> int:
    """Validate every model file, vars.env, the template and the rules across files."""
    project = project_from(ctx)
    selection, problems = load_all(project)
    routing_notes: list[str] = []
    if selection.models:
        try:
            render_all(selection)
            routes = plan_routes(selection)  # deployments.yml, read (and validated) by render_all too
            if routes.source == FILE_NAME:
                routing_notes.append(routes.summary())
            problems += on_demand.problems(project)  # pinned and preloaded sets vs the GPU profile's budget
        except ConfgenError as exc:
            problems += exc.problems
    notes = secret_report(selection) + routing_notes
    plan_problems, plan_notes = plan_checks(selection)  # arch sections vs commands, GPU profiles
    problems += plan_problems
    notes += plan_notes
    if with_vllm and selection.models:
        report = check_commands(project, selection.models)
        problems += report.problems
        notes.append(report.summary)
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    for note in notes:
        click.echo(f"note: {note}")
    if problems:
        click.echo(f"check failed: {len(problems)} problem(s) in {project.root}", err=True)
        return 1
    click.echo(f"ok: {len(selection.models)} models, vars.env and {project.rel(project.template)} are valid")
    return 0
