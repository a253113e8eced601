"""Coding agents and SDKs on the gateway: one module per client, each `config(endpoint, environ) ->
ClientConfig` (what `confgen client NAME` prints and `--write` writes), listed in CLIENTS."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from confgen.clients import claude_code, cline, codex, continue_dev, copilot, openai_sdk
from confgen.clients.endpoint import Endpoint
from confgen.clients.output import ClientConfig

Render = Callable[[Endpoint, Mapping[str, str]], ClientConfig]
CLIENTS: dict[str, Render] = {
    claude_code.NAME: claude_code.config,
    codex.NAME: codex.config,
    continue_dev.NAME: continue_dev.config,
    copilot.NAME: copilot.config,
    cline.NAME: cline.config,
    openai_sdk.NAME: openai_sdk.config,
}
