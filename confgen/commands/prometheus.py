"""confgen prometheus: write prometheus.yml that scrapes the gateway and the selected models' vLLMs."""

from __future__ import annotations

from pathlib import Path

import click

from confgen.atomic import write_atomic
from confgen.catalog import select
from confgen.commands import model_option, project_from
from confgen.render import prometheus
from confgen.runtime import monitoring


@click.command("prometheus")
@model_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write prometheus.yml into (created if missing); docker-compose.monitoring.yml "
                   "reads run/monitoring.")
@click.option("--docker", is_flag=True,
              help="The Docker monitoring profile: compose service names, secrets under /run/secrets, plus "
                   "node-exporter, cAdvisor and dcgm-exporter; also creates the data folders and "
                   "secrets/GRAFANA_ADMIN_PASSWORD if missing.")
@click.pass_context
def command(ctx: click.Context, models: tuple[str, ...], out: Path, docker: bool) -> int:
    """Render the Prometheus scrape config for the selected models."""
    project = project_from(ctx)
    for name, text in prometheus.render(select(project, list(models)), docker=docker).items():
        write_atomic(out / name, text)
        click.echo(f"wrote {out / name}")
    if docker:
        for created in monitoring.prepare_docker(project, out):
            click.echo(f"created {created}")
    return 0
