"""OpenAI Codex CLI: a `[model_providers.confgen]` table speaking the Responses API to the gateway's
/v1/responses (`wire_api = "responses"`, the only one Codex accepts); the key comes from CONFGEN_API_KEY.

Written to $CODEX_HOME/config.toml (default ~/.codex); other catalog models become profiles in
$CODEX_HOME/NAME.config.toml (`codex --profile NAME`; Codex 0.169 refuses `[profiles.*]` tables). The
launcher passes the same settings as `-c key=value` overrides instead, so it never edits the user's file.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from confgen.clients.endpoint import ClientModel, Endpoint, home
from confgen.clients.output import ClientConfig, ConfigFile

NAME = "codex"
PROVIDER = "confgen"
CA_ENV = "CODEX_CA_CERTIFICATE"
Value = str | int | bool | dict[str, "str | int | bool"]


def provider(ep: Endpoint) -> dict[str, str | int | bool]:
    longest = max(m.timeout_s for m in ep.models)
    return {"name": "confgen gateway", "base_url": ep.openai_base, "env_key": ep.key.env, "wire_api": "responses",
            "stream_idle_timeout_ms": int(longest * 1000)}


def model_settings(model: ClientModel) -> dict[str, Value]:
    settings: dict[str, Value] = {"model": model.name, "model_provider": PROVIDER}
    if model.context:
        settings["model_context_window"] = model.context
    return settings


def top_level(ep: Endpoint) -> dict[str, Value]:
    # No update checks and no analytics: nothing but the gateway should hear from it.
    return {**model_settings(ep.default), "check_for_update_on_startup": False}


def overrides(ep: Endpoint) -> list[str]:
    """The configuration as `codex -c key=value` arguments (values in TOML)."""
    args = [f"{key}={_toml(value)}" for key, value in top_level(ep).items()]
    args.append("analytics.enabled=false")
    args.append(f"model_providers.{PROVIDER}={_toml(provider(ep))}")
    return [item for arg in args for item in ("-c", arg)]


def env_for(ep: Endpoint) -> dict[str, str]:
    """What the launcher adds to the environment besides the key."""
    return {CA_ENV: str(ep.ca_file)} if ep.ca_file is not None else {}


def config_path(environ: Mapping[str, str]) -> Path:
    folder = environ.get("CODEX_HOME")
    return (Path(folder) if folder else home(environ) / ".codex") / "config.toml"


def toml_text(ep: Endpoint) -> str:
    lines = [f"# Written by `confgen client codex`: the gateway at {ep.base_url}.",
             f"# The key comes from ${ep.key.env} ({ep.key.label}).", ""]
    lines += [f"{key} = {_toml(value)}" for key, value in top_level(ep).items()]
    lines += ["", "[analytics]", "enabled = false", "", f"[model_providers.{PROVIDER}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in provider(ep).items()]
    return "\n".join(lines) + "\n"


def profile_text(model: ClientModel) -> str:
    """A profile file (Codex >= 0.16x: $CODEX_HOME/<name>.config.toml, layered over config.toml)."""
    lines = [f"# Written by `confgen client codex`: codex --profile {model.name}"]
    lines += [f"{key} = {_toml(value)}" for key, value in model_settings(model).items()]
    return "\n".join(lines) + "\n"


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    path = config_path(environ)
    shell = [f"export {ep.key.env}={ep.key.shell}"]
    shell += [f"export {name}={shlex.quote(value)}" for name, value in env_for(ep).items()]
    shell.append("codex")
    profiles = ", ".join(m.name for m in ep.models[1:])
    notes = [f"Key: {ep.key.label}, read from ${ep.key.env} (env_key): export it in the shell that runs codex.",
             "Or `confgen launch codex` sets all of it for one run without touching config.toml.",
             f"--write replaces {path} (backing it up first)."]
    if profiles:
        notes.append(f"Other models as profiles (NAME.config.toml beside it): codex --profile NAME ({profiles}).")
    profiles_files = tuple(ConfigFile(path.with_name(f"{m.name}.config.toml"), profile_text(m)) for m in ep.models[1:])
    return ClientConfig(NAME, files=(ConfigFile(path, toml_text(ep)), *profiles_files), shell=tuple(shell),
                        notes=tuple(notes))


def _toml(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # a JSON string is a TOML basic string


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
