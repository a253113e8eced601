"""Continue (VS Code / JetBrains extension and the `cn` CLI): an `openai` provider per model in config.yaml,
pointed at the gateway's /v1 (chat completions, with tools), the key as `${{ secrets.CONFGEN_API_KEY }}`.

Continue resolves that secret from the process environment or ~/.continue/.env (checked with `cn`), so
the file never holds the key. Written to ~/.continue/config.yaml (CONTINUE_GLOBAL_DIR moves it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from confgen.clients.endpoint import ClientModel, Endpoint, home
from confgen.clients.output import ClientConfig, ConfigFile

NAME = "continue"


def _model(ep: Endpoint, model: ClientModel) -> dict[str, Any]:
    options: dict[str, Any] = {"maxTokens": model.max_output}
    if model.context:
        options = {"contextLength": model.context, **options}
    request: dict[str, Any] = {"timeout": int(model.timeout_s)}
    if ep.ca_file is not None:
        request["caBundlePath"] = str(ep.ca_file)
    return {"name": f"{model.name} (gateway)", "provider": "openai", "model": model.name, "apiBase": ep.openai_base,
            "apiKey": "${{ secrets." + ep.key.env + " }}", "roles": ["chat", "edit", "apply"],
            # Agent mode needs tool use; vLLM serves it when the model file sets a tool-call parser.
            "capabilities": ["tool_use"], "defaultCompletionOptions": options, "requestOptions": request}


def document(ep: Endpoint) -> dict[str, Any]:
    return {"name": "confgen gateway", "version": "0.0.1", "schema": "v1",
            "models": [_model(ep, m) for m in ep.models]}


def config_path(environ: Mapping[str, str]) -> Path:
    folder = environ.get("CONTINUE_GLOBAL_DIR")
    return (Path(folder) if folder else home(environ) / ".continue") / "config.yaml"


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    path = config_path(environ)
    text = (f"# Written by `confgen client continue`: the gateway at {ep.base_url}; the key is the secret "
            f"{ep.key.env}.\n" + yaml.safe_dump(document(ep), sort_keys=False, width=120))
    shell = [f"export {ep.key.env}={ep.key.shell}", f"cn --config {path}"]
    notes = [f"Key: {ep.key.label}. Continue reads ${{{{ secrets.{ep.key.env} }}}} from the environment or from "
             f"{path.parent / '.env'} (a line {ep.key.env}=<key>, mode 0600): start VS Code from a shell that "
             "exports it, or write that file.",
             f"--write replaces {path} (backing it up first)."]
    return ClientConfig(NAME, files=(ConfigFile(path, text),), shell=tuple(shell), notes=tuple(notes))
