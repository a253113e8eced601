"""From command-line options to an Endpoint: models, gateway URL, CA file and the key (shared by
`confgen client` and `confgen launch`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from confgen.clients import userkey
from confgen.clients.endpoint import (
    ClientModel,
    Endpoint,
    ca_file_for,
    default_base_url,
    normalise_base_url,
    select_models,
)
from confgen.errors import EXIT_USAGE, ConfgenError
from confgen.load import Project


def endpoint(project: Project, environ: Mapping[str, str], *, models: Sequence[str], key_file: Path | None,
             alias: str | None, base_url: str | None, ca_file: Path | None, master_key: bool = False,
             show_key: bool = False) -> tuple[Endpoint, userkey.UserKey]:
    if master_key and key_file is not None:
        raise ConfgenError.one("--master-key", "and --key-file name two keys", "pass one of them", EXIT_USAGE)
    selection = select_models(project, models, environ)
    base = normalise_base_url(base_url) if base_url else default_base_url(selection)
    ca = ca_file_for(project, base, ca_file)
    if key_file is not None:
        key = userkey.from_file(key_file)
    elif master_key:
        key = userkey.master(project)
    else:
        key = userkey.for_user(project, environ, alias or userkey.default_alias(environ))
    key = key.with_value_shown(show_key)
    return Endpoint(base, key.ref, tuple(ClientModel.of(m) for m in selection.models), ca), key


def key_lines(key: userkey.UserKey) -> list[str]:
    """What to tell the user about the key (never its value)."""
    if key.warning:
        return [f"warning: {key.warning}"]
    return [f"key: {key.ref.label}"]
