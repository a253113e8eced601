"""GitHub Copilot Chat in VS Code (>= 1.122): the "Custom Endpoint" language-model provider, in the
user folder's chatLanguageModels.json. VS Code asks for the key once (`${input:...}`) and keeps it in its
secret storage. Inline completions, embeddings and search still use Copilot's own service.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confgen.clients.endpoint import ClientModel, Endpoint, home
from confgen.clients.output import ClientConfig, ConfigFile, Merge
from confgen.errors import ConfgenError

NAME = "copilot"
PROVIDER = "confgen gateway"


def _model(ep: Endpoint, model: ClientModel) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model.name, "name": f"{model.name} (gateway)",
                             "url": f"{ep.openai_base}/chat/completions", "toolCalling": True, "vision": False,
                             "streaming": True, "maxOutputTokens": model.max_output}
    if model.max_input:
        entry["maxInputTokens"] = model.max_input
    return entry


def provider(ep: Endpoint) -> dict[str, Any]:
    return {"name": PROVIDER, "vendor": "customendpoint", "apiKey": "${input:confgenGatewayKey}",
            "apiType": "chat-completions", "models": [_model(ep, m) for m in ep.models]}


def user_folder(environ: Mapping[str, str]) -> Path:
    if sys.platform == "darwin":
        return home(environ) / "Library" / "Application Support" / "Code" / "User"
    if sys.platform == "win32":
        return Path(environ.get("APPDATA") or home(environ) / "AppData" / "Roaming") / "Code" / "User"
    config_home = environ.get("XDG_CONFIG_HOME")
    return (Path(config_home) if config_home else home(environ) / ".config") / "Code" / "User"


def merge_providers(ep: Endpoint, path: Path) -> Merge:
    """Replace our provider entry, keep the others."""
    def merge(old: str) -> str:
        try:
            doc = json.loads(old)
        except ValueError as exc:
            raise ConfgenError.one(str(path), f"is not valid JSON ({exc})", "fix it or move it away") from None
        if not isinstance(doc, list):
            raise ConfgenError.one(str(path), "expected a JSON list of providers", "fix it or move it away")
        kept = [p for p in doc if not (isinstance(p, dict) and p.get("name") == PROVIDER)]
        return json.dumps([*kept, provider(ep)], indent=2) + "\n"

    return merge


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    path = user_folder(environ) / "chatLanguageModels.json"
    paste = ep.key.value if ep.key.value is not None else f"{ep.key.label} (`cat {ep.key.path}`)"
    notes = [f"VS Code asks for the key the first time: paste {paste}.",
             "Or add it by hand: Chat: Manage Language Models -> Add Models -> Custom Endpoint.",
             "Agent mode lists only models with toolCalling; inline completions still use Copilot's service.",
             f"--write merges this provider into {path} (backing it up first)."]
    if ep.ca_file is not None:
        notes.append(f"https: VS Code trusts the system's CAs: add {ep.ca_file} to the system trust store.")
    text = json.dumps([provider(ep)], indent=2) + "\n"
    return ClientConfig(NAME, files=(ConfigFile(path, text, merge=merge_providers(ep, path)),), notes=tuple(notes))
