"""confgen client NAME: the configuration of a coding agent or SDK for this gateway, printed or written."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.clients import CLIENTS, output
from confgen.clients.resolve import endpoint, key_lines
from confgen.commands import project_from


def endpoint_options(func: click.decorators.FC) -> click.decorators.FC:
    """--model, --key-file, --master-key, --alias, --base-url, --ca-file (shared with `confgen launch`)."""
    options = [
        click.option("--model", "models", multiple=True, metavar="NAME",
                     help="A catalog model; repeat for several (the first is the default).  "
                          "[default: the model of the running stack]"),
        click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="A file holding the key to use.  [default: your own key, made with the key store on "
                          "first use and kept in ~/.config/confgen/keys/ALIAS.key]"),
        click.option("--master-key", is_flag=True,
                     help="Give the client the master key (secrets/LITELLM_MASTER_KEY), which may call every route, "
                          "instead of a key of your own; never done without this flag, even when the key store "
                          "is down."),
        click.option("--alias", default=None, help="Alias of your own key.  [default: <user>-agents]"),
        click.option("--base-url", default=None, metavar="URL",
                     help="The gateway, without /v1.  [default: http://LITELLM_HOST:LITELLM_PORT from vars.env]"),
        click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="CA certificate of an https gateway.  [default: certs/ca.crt]"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("client")
@click.argument("name", type=click.Choice(list(CLIENTS)))
@endpoint_options
@click.option("--show-key", is_flag=True, help="Put the key's value in the output instead of reading its file.")
@click.option("--write", "write_files", is_flag=True,
              help="Write the files to the client's usual place (HOME, CODEX_HOME, ...), backing up what is there.")
@click.pass_context
def command(ctx: click.Context, *, name: str, models: tuple[str, ...], key_file: Path | None, master_key: bool,
            alias: str | None, base_url: str | None, ca_file: Path | None, show_key: bool, write_files: bool) -> int:
    """Print (or --write) the configuration of NAME for this gateway: each model with its context and a max
    output that fits it; the key is referenced by its file or a variable, never printed unless asked."""
    environ = dict(os.environ)
    ep, key = endpoint(project_from(ctx), environ, models=models, key_file=key_file, alias=alias,
                       base_url=base_url, ca_file=ca_file, master_key=master_key, show_key=show_key)
    for line in key_lines(key):
        click.echo(line, err=True)
    config = CLIENTS[name](ep, environ)
    if not write_files:
        click.echo(config.render(), nl=False)
        return 0
    for done in output.write(config):
        if done.unchanged:
            click.echo(f"unchanged: {done.path}")
            continue
        how = "merged into" if done.merged else "wrote"
        backup = f" (the old one is in {done.backup})" if done.backup else ""
        click.echo(f"{how} {done.path}{backup}")
    for line in config.shell:
        if line.startswith("export "):
            click.echo(f"then, in your shell: {line}")
    return 0
