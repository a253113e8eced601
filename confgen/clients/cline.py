"""Cline (VS Code): the "OpenAI Compatible" API provider. Cline keeps its settings in VS Code's own storage,
not in a file we could write, so this prints what to enter in its settings panel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confgen.clients.endpoint import Endpoint
from confgen.clients.output import ClientConfig

NAME = "cline"


def settings(ep: Endpoint) -> dict[str, Any]:
    model = ep.default
    info: dict[str, Any] = {"maxTokens": model.max_output, "supportsImages": False, "supportsPromptCache": False}
    if model.context:
        info["contextWindow"] = model.context
    key = ep.key.value if ep.key.value is not None else f"<the key: cat {ep.key.path}>"
    return {"apiProvider": "openai", "openAiBaseUrl": ep.openai_base, "openAiApiKey": key,
            "openAiModelId": model.name, "openAiCustomModelInfo": info}


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    s = settings(ep)
    info = s["openAiCustomModelInfo"]
    steps = ["Cline -> Settings -> API Provider: OpenAI Compatible, then:",
             f"  Base URL:        {s['openAiBaseUrl']}",
             f"  API Key:         {s['openAiApiKey']}",
             f"  Model ID:        {s['openAiModelId']}",
             f"  Context Window:  {info.get('contextWindow', 'leave the default')}",
             f"  Max Output:      {info['maxTokens']}",
             "Above, as Cline's provider settings (enterprise remote config, exported API configuration)."]
    if ep.ca_file is not None:
        steps.append(f"https: VS Code trusts the system's CAs: add {ep.ca_file} to the system trust store.")
    return ClientConfig(NAME, snippets=(("cline provider settings", json.dumps(s, indent=2)),), notes=tuple(steps),
                        write_hint="Cline keeps its settings in VS Code's storage, not in a file")
