"""Per-deployment state as a running gateway sees it: GET /health (master key) lists each replica as healthy
or not, with the error of its last probe. With background probes (a model with replicas or a fallback) these
are the verdicts routing uses; without them the gateway probes every replica when asked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from confgen.errors import EXIT_FAILED, ConfgenError

PROVIDER = "hosted_vllm/"
TIMEOUT_S = 60.0  # without background probes the gateway probes every replica while we wait


@dataclass(frozen=True)
class DeploymentState:
    model: str  # the name clients use (the deployment's model group)
    api_base: str
    healthy: bool
    error: str = ""  # first line of the last probe's error

    def line(self) -> str:
        state = "healthy" if self.healthy else f"UNHEALTHY: {self.error}"
        return f"  {self.model:24} {self.api_base:40} {state}"


def parse_health(body: dict[str, Any]) -> list[DeploymentState]:
    states = [_state(e, True) for e in body.get("healthy_endpoints") or []]
    states += [_state(e, False) for e in body.get("unhealthy_endpoints") or []]
    return sorted(states, key=lambda s: (s.model, s.api_base))


def _state(endpoint: dict[str, Any], healthy: bool) -> DeploymentState:
    model = str(endpoint.get("model") or "?").removeprefix(PROVIDER)
    error = str(endpoint.get("error") or "").strip().splitlines()
    first = _NOISE.sub("", error[0]).strip() if error else ("" if healthy else "no detail")
    return DeploymentState(model, str(endpoint.get("api_base") or "?"), healthy, first[:160])


# LiteLLM's wrapping of the error ("litellm.InternalServerError: InternalServerError: Hosted_vllmException - ")
# and aiohttp's "ssl:<ssl.SSLContext object at 0x...>" say nothing about the replica.
_NOISE = re.compile(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?|ssl:<[^>]*> ?")


def fetch(gateway: str, master_key: str, timeout_s: float = TIMEOUT_S) -> list[DeploymentState]:
    url = f"{gateway.rstrip('/')}/health"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {master_key}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ConfgenError.one(url, f"no answer: {type(exc).__name__}: {exc}",
                               "is the gateway running? (./runMe.sh status)", EXIT_FAILED) from None
    if resp.status_code != 200:
        fix = "use the master key (secrets/LITELLM_MASTER_KEY)" if resp.status_code in (401, 403) else ""
        raise ConfgenError.one(url, f"HTTP {resp.status_code}: {resp.text[:200]}", fix, EXIT_FAILED)
    return parse_health(resp.json())


def report(states: list[DeploymentState]) -> list[str]:
    if not states:
        return ["  no deployment checked yet (the first background probe runs shortly after start)"]
    unhealthy = sum(not s.healthy for s in states)
    head = f"deployments: {len(states) - unhealthy} healthy, {unhealthy} unhealthy"
    return [head, *(s.line() for s in states)]


def summary(gateway: str, master_key: str | None) -> tuple[bool, list[str]]:
    """For `./runMe.sh status`: (all deployments healthy, lines); never raises."""
    if not master_key:
        return True, ["  deployments: not shown (no secrets/LITELLM_MASTER_KEY)"]
    try:
        states = fetch(gateway, master_key)
    except ConfgenError as exc:
        return False, [f"  deployments: cannot read {gateway}/health: {exc.problems[0].what}"]
    return all(s.healthy for s in states), ["  " + line for line in report(states)]
