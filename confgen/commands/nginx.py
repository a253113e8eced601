"""confgen nginx: the HTTPS gateway's nginx.conf, with a path per model (/<model>/v1/...)."""

from __future__ import annotations

from pathlib import Path

import click

from confgen.catalog import select
from confgen.commands import model_option, project_from
from confgen.render import nginx
from confgen.runtime import secret_files

_PORT = click.IntRange(1, 65535)


@click.command("nginx")
@model_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for nginx.conf; nginx runs with it as its prefix (logs/, tmp/, nginx.pid).")
@click.option("--https-port", type=_PORT, default=443, show_default=True, help="HTTPS port (TLS 1.2+).")
@click.option("--http-port", type=_PORT, default=80, show_default=True, help="HTTP port: redirects to HTTPS.")
@click.option("--listen", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the gateway to the network.")
@click.option("--certs", type=click.Path(path_type=Path, file_okay=False), default=None,
              show_default="certs/ in the project",
              help="Folder with server.crt and server.key (make them with scripts/certs.sh DIR).")
@click.option("--public-paths", is_flag=True,
              help="Send /<model>/v1/... straight to vLLM with NO client key (no gateway keys, limits or usage).")
@click.option("--max-conn-per-ip", type=click.IntRange(1, 100000), default=64, show_default=True,
              help="Open connections one client address may hold; more get 429.")
@click.pass_context
def command(ctx: click.Context, *, models: tuple[str, ...], out: Path, https_port: int, http_port: int, listen: str,
            certs: Path | None, public_paths: bool, max_conn_per_ip: int) -> int:
    """Render nginx.conf: HTTPS, /health, GET /v1/models, /<model>/v1/... and /v1/... to the gateway."""
    project = project_from(ctx)
    selection = select(project, list(models))
    options = nginx.NginxOptions(certs=certs or project.root / "certs", https_port=https_port, http_port=http_port,
                                 listen=listen, public_paths=public_paths, max_conn_per_ip=max_conn_per_ip)
    key = secret_files.require(project, ("VLLM_API_KEY",))["VLLM_API_KEY"] if public_paths else None
    for path in nginx.write(selection, options, out, key):
        click.echo(f"wrote {path}{' (mode 0600: it holds the vLLM API key)' if path.name == nginx.AUTH_FILE else ''}")
    if public_paths:
        click.echo("WARNING: --public-paths: /<model>/v1/... goes straight to vLLM with NO client key: anyone who "
                   "can reach this server can use these models; no gateway key, limit or usage record applies.")
    else:
        click.echo("per-model paths go through the LiteLLM gateway: clients send a gateway key.")
    for m in selection.models:
        click.echo(f"  {options.base_url(m.name)}  ->  {m.name}")
    for cert in (options.cert, options.key):
        if not cert.is_file():
            click.echo(f"note: {cert} is missing: make it with scripts/certs.sh {options.certs}", err=True)
    click.echo(f"run: nginx -p {out.resolve()} -c nginx.conf   (check it first with nginx -t and the same flags)")
    return 0
