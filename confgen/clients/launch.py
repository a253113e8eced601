"""`confgen launch claude|codex`: the environment (and, for Codex, `-c` overrides) for the gateway, checked,
then exec of the client. It refuses to start when the gateway does not answer, refuses the key, does not
serve the model, or any variable is missing, so a client never falls back to a vendor's cloud.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx

from confgen.clients import claude_code, codex
from confgen.clients.endpoint import Endpoint
from confgen.errors import ConfgenError, LaunchError

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Agent:
    binary: str
    package: str  # the npm package, at the version the tests pin (clients/package.json)
    version: str


AGENTS = {
    "claude": Agent("claude", "@anthropic-ai/claude-code", "2.1.332"),
    "codex": Agent("codex", "@openai/codex", "0.169.0"),
}


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    required: tuple[str, ...]  # variables that must be set and non-empty


def plan(agent: str, ep: Endpoint, key: str, environ: Mapping[str, str], *, binary: str,
         args: Sequence[str]) -> Launch:
    """argv and environment for one client; nothing is checked or run yet."""
    drop = claude_code.CONFLICTING if agent == "claude" else ()
    env = {k: v for k, v in environ.items() if k not in drop}
    env["NO_PROXY"] = _no_proxy(env.get("NO_PROXY") or env.get("no_proxy") or "", ep.host)
    env["no_proxy"] = env["NO_PROXY"]
    if agent == "claude":
        env.update(claude_code.env_for(ep))
        env["ANTHROPIC_AUTH_TOKEN"] = key
        return Launch([binary, *args], env, claude_code.required(ep))
    env.update(codex.env_for(ep))
    env[ep.key.env] = key
    required = (ep.key.env, codex.CA_ENV) if ep.https else (ep.key.env,)
    return Launch([binary, *codex.overrides(ep), *args], env, required)


def check_env(launch: Launch) -> None:
    missing = [name for name in launch.required if not launch.env.get(name, "").strip()]
    if missing:
        raise LaunchError("environment", f"not set: {', '.join(missing)}; refusing to start a client that could "
                          "fall back to a vendor's service", "report this: the launcher should have set them")


def preflight(ep: Endpoint, key: str, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The gateway answers its liveness probe, accepts the key and serves the default model; the served ids."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ep.ca_file)) if ep.ca_file else True
    with httpx.Client(timeout=timeout, verify=verify, trust_env=False) as client:
        try:
            alive = client.get(f"{ep.base_url}/health/liveliness")
        except httpx.HTTPError as exc:
            raise LaunchError(ep.base_url, f"the gateway is not reachable ({type(exc).__name__}: {exc})",
                              "start it (./runMe.sh) or point --base-url at it") from None
        if alive.status_code != 200:
            raise LaunchError(f"{ep.base_url}/health/liveliness", f"answered HTTP {alive.status_code}",
                              "is this the LiteLLM gateway? check --base-url") from None
        try:
            listed = client.get(f"{ep.openai_base}/models", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            raise LaunchError(f"{ep.openai_base}/models", f"failed: {exc}", "see the gateway's log") from None
    if listed.status_code in (401, 403):
        raise LaunchError(ep.key.label, f"the gateway refused it (HTTP {listed.status_code}: {_message(listed)})",
                          "check the key (confgen keys list) or pass --key-file")
    if listed.status_code != 200:
        raise LaunchError(f"{ep.openai_base}/models", f"HTTP {listed.status_code}: {_message(listed)}",
                          "see the gateway's log")
    served = sorted(str(m.get("id")) for m in listed.json().get("data", []) if isinstance(m, dict))
    wanted = [m.name for m in ep.models if m.name not in served]
    if wanted:
        raise LaunchError(f"--model {wanted[0]}", f"the gateway at {ep.base_url} does not serve it (it serves: "
                          f"{', '.join(served) or 'nothing'})", "pick one it serves with --model")
    return served


def find_binary(agent: str, given: Path | None, environ: Mapping[str, str]) -> str:
    spec = AGENTS[agent]
    if given is not None:
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise ConfgenError.one("--bin", f"{given} is not an executable file", exit_code=2)
        return str(given.resolve())
    found = shutil.which(spec.binary, path=environ.get("PATH"))
    if found is None:
        raise LaunchError(spec.binary, "not found on PATH",
                          f"npm install -g {spec.package}@{spec.version} (the tested version), or pass --bin")
    return found


def run(launch: Launch) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(launch.argv[0], launch.argv, launch.env)  # noqa: S606 - argv is a list, no shell


def _no_proxy(current: str, host: str) -> str:
    """Loopback and the gateway's host never go through an HTTP(S)_PROXY the user may have set."""
    names = [n.strip() for n in current.split(",") if n.strip()]
    for name in ("127.0.0.1", "localhost", "::1", host):
        if name and name not in names:
            names.append(name)
    return ",".join(names)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:200]
    return str(error or body)[:200]
