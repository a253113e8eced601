"""Claude Code: Anthropic's /v1/messages on the gateway, configured by environment variables.

Written to ~/.claude/settings.json (CLAUDE_CONFIG_DIR moves it) as an `env` block plus `apiKeyHelper`, a
command that prints the key, so the file never holds the key. Variable names checked against the pinned
CLI (clients/package.json); see docs/clients.md.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path

from confgen.clients.endpoint import ClientModel, Endpoint, home
from confgen.clients.output import ClientConfig, ConfigFile, Merge
from confgen.errors import ConfgenError

NAME = "claude-code"
# Variables that would send the key elsewhere or replace ours: dropped from the launcher's environment
# and from a settings file we merge into.
CONFLICTING = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
               "CLAUDE_CODE_USE_FOUNDRY", "ANTHROPIC_SMALL_FAST_MODEL")
# Claude Code clamps its auto-compact window to 100k-1M tokens: below that it cannot be told the context.
MIN_COMPACT_WINDOW = 100_000


def env_for(ep: Endpoint) -> dict[str, str]:
    """Everything Claude Code needs but the key. The first model is the default (opus and sonnet aliases);
    a second one, if given, takes the haiku alias, which also runs Claude Code's background tasks."""
    main = ep.models[0]
    small = ep.models[1] if len(ep.models) > 1 else main
    env = {
        "ANTHROPIC_BASE_URL": ep.base_url,  # no /v1: Claude Code adds /v1/messages
        "ANTHROPIC_MODEL": main.name,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": main.name,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": main.name,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small.name,
        # Its default for models it does not know is 32000, more than most contexts hold next to its prompt.
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(min(main.max_output, small.max_output)),
        "API_TIMEOUT_MS": str(int(max(main.timeout_s, small.timeout_s) * 1000)),
        # Off: the attribution block at the head of the system prompt (x-anthropic-billing-header:
        # cc_version=..., checked with 2.1.332) varies and so defeats vLLM's prefix cache.
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, error reports, update checks
        "DISABLE_AUTOUPDATER": "1",
    }
    window = _compact_window(main)
    if window:
        env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(window)
    if ep.ca_file is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ep.ca_file)
    return env


def required(ep: Endpoint) -> tuple[str, ...]:
    """What the launcher refuses to start without (the key included)."""
    names = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL",
             "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL", "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
             "CLAUDE_CODE_ATTRIBUTION_HEADER", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_AUTOUPDATER")
    return (*names, "NODE_EXTRA_CA_CERTS") if ep.https else names


def settings_path(environ: Mapping[str, str]) -> Path:
    folder = environ.get("CLAUDE_CONFIG_DIR")
    return (Path(folder) if folder else home(environ) / ".claude") / "settings.json"


def key_helper(ep: Endpoint) -> str:
    return f"cat {shlex.quote(str(ep.key.path))}"


def settings(ep: Endpoint) -> dict[str, object]:
    return {"env": env_for(ep), "apiKeyHelper": key_helper(ep)}


def merge_settings(ep: Endpoint, path: Path) -> Merge:
    def merge(old: str) -> str:
        try:
            doc = json.loads(old)
        except ValueError as exc:
            raise ConfgenError.one(str(path), f"is not valid JSON ({exc})", "fix it or move it away") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("env", {}), dict):
            raise ConfgenError.one(str(path), "expected a JSON object with an `env` object",
                                   "fix it or move it away")
        env = {k: v for k, v in doc.get("env", {}).items() if k not in CONFLICTING}
        doc["env"] = {**env, **env_for(ep)}
        doc["apiKeyHelper"] = key_helper(ep)
        return json.dumps(doc, indent=2) + "\n"

    return merge


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    path = settings_path(environ)
    env = env_for(ep)
    shell = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    shell += [f"export ANTHROPIC_AUTH_TOKEN={ep.key.shell}", "unset ANTHROPIC_API_KEY", "claude"]
    notes = [
        f"Key: {ep.key.label}; settings.json reads it with apiKeyHelper (the file never holds it).",
        "Or skip all this: `confgen launch claude` sets the environment, checks the gateway and starts Claude Code.",
        f"--write merges the env block into {path} (backing it up first) and removes "
        f"{', '.join(CONFLICTING)} from it.",
        "VS Code extension: the same variables in the user setting claudeCode.environmentVariables.",
    ]
    if _compact_window(ep.default) is None and ep.default.context:
        notes.append(f"{ep.default.name} has a {ep.default.context}-token context: below the 100k Claude Code can "
                     "be told of, so it will not compact in time; /compact by hand or use a longer-context model.")
    return ClientConfig(NAME, files=(ConfigFile(path, json.dumps(settings(ep), indent=2) + "\n",
                                                merge=merge_settings(ep, path)),),
                        shell=tuple(shell), notes=tuple(notes))


def _compact_window(model: ClientModel) -> int | None:
    return model.context if model.context and model.context >= MIN_COMPACT_WINDOW else None
