"""The routing plan of a selection: deployments.yml (or its defaults) resolved against the merged models.

What the LiteLLM config is rendered from. The rules, in one place:
- a model not in deployments.yml has one replica: its own vLLM (ResolvedModel.api_base);
- a model is *lone* when it has one replica and no fallback in the selection. Nothing can take over from it,
  so it is never benched (cooldown 0), a timeout is not retried (it would only wait again on the same vLLM)
  and its streaming timeout is its request timeout;
- every other model: failed attempts go to another replica (or the fallback), a replica that fails
  `allowed_fails` + 1 times within `cooldown_s` is benched for `cooldown_s`, and a stream that is silent for
  `stream_idle_s` (before the first token, or between tokens) is given up and retried elsewhere;
- fallbacks name catalog models; one that is not in the selection is left out of the config (and said so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.load import model_names
from confgen.merge import ResolvedModel
from confgen.routing.load import FILE_NAME, load_deployments
from confgen.routing.schema import DeploymentsFile, Gateway, ModelDeployment, Replica, Routing
from confgen.schema import redis_off

STALE_AFTER_INTERVALS = 3  # a health verdict older than this many probe intervals is ignored


@dataclass(frozen=True)
class ModelRoute:
    name: str
    served_name: str
    replicas: tuple[Replica, ...]
    fallbacks: tuple[str, ...]  # served names of selected models, in order
    left_out: tuple[str, ...]  # fallbacks named in deployments.yml that are not in the selection
    stream_timeout: float
    allowed_fails: int
    cooldown_time: float  # 0: never benched
    health_timeout: float

    @property
    def lone(self) -> bool:
        return len(self.replicas) == 1 and not self.fallbacks


@dataclass(frozen=True)
class RoutePlan:
    source: str  # deployments.yml, or "built-in defaults" without one
    routing: Routing
    gateway: Gateway
    models: dict[str, ModelRoute] = field(hash=False)

    @property
    def shared_state(self) -> bool:
        """Several gateways: cooldowns and health verdicts live in Redis, not in each process."""
        return self.gateway.instances > 1

    @property
    def fallbacks(self) -> list[dict[str, list[str]]]:
        return [{r.served_name: list(r.fallbacks)} for r in self.models.values() if r.fallbacks]

    @property
    def timeout_retry_policy(self) -> dict[str, dict[str, int]]:
        """Lone models: a timed-out attempt is not repeated on the same vLLM."""
        return {r.served_name: {"TimeoutErrorRetries": 0} for r in self.models.values() if r.lone}

    @property
    def background_probes(self) -> bool:
        """Health probes only matter where a replica can leave the rotation: some model is not lone."""
        return any(not r.lone for r in self.models.values())

    def summary(self) -> str:
        """One line for `confgen check`: what the gateway will route where."""
        replicated = [r for r in self.models.values() if len(r.replicas) > 1]
        chains = [f"{r.name} -> {', '.join(r.fallbacks)}" for r in self.models.values() if r.fallbacks]
        parts = [f"{len(replicated)} of {len(self.models)} models on several replicas "
                 f"({sum(len(r.replicas) for r in replicated)} replicas)",
                 f"fallbacks: {'; '.join(chains) or 'none'}",
                 f"{self.gateway.instances} gateway instance{'s' if self.gateway.instances > 1 else ''}"
                 + (" sharing state in Redis" if self.shared_state else "")]
        return f"routing ({self.source}): {', '.join(parts)}"

    @property
    def health_staleness_s(self) -> int:
        return self.routing.health_interval_s * STALE_AFTER_INTERVALS


def plan_routes(selection: Selection, deployments: DeploymentsFile | None = None, source: str = "") -> RoutePlan:
    """Load deployments.yml (validated against the whole catalog) and resolve it for the selected models.

    `deployments` (with its `source` label) replaces the file: `confgen k8s` passes the cluster's view of it.
    """
    project = selection.project
    parsed = deployments if deployments is not None else load_deployments(project, model_names(project))
    source = source or (FILE_NAME if parsed is not None else "built-in defaults")
    parsed = parsed or DeploymentsFile()
    if deployments is None and parsed.gateway.instances > 1 and redis_off(selection.gvars.settings.REDIS_URL):
        raise ConfgenError.one(f"{FILE_NAME}: gateway.instances",
                               f"{parsed.gateway.instances} gateways need Redis to share cooldowns and limits, "
                               "but REDIS_URL is none", "set REDIS_URL in vars.env, or use one instance")
    served = {m.name: m.served_name for m in selection.models}
    models = {m.name: _route(m, parsed.models.get(m.name), parsed.routing, served) for m in selection.models}
    return RoutePlan(source, parsed.routing, parsed.gateway, models)


def _route(model: ResolvedModel, spec: ModelDeployment | None, routing: Routing, served: dict[str, str]) -> ModelRoute:
    replicas = tuple(spec.replicas) if spec else (Replica(api_base=model.api_base),)
    named = spec.fallbacks if spec else []
    fallbacks = tuple(served[n] for n in named if n in served)
    left_out = tuple(n for n in named if n not in served)
    lone = len(replicas) == 1 and not fallbacks

    def pick(own: float | None, default: float) -> float:
        return own if own is not None else default

    stream_default = model.limits.timeout if lone else routing.stream_idle_s
    allowed = spec.allowed_fails if spec and spec.allowed_fails is not None else routing.allowed_fails
    return ModelRoute(
        name=model.name,
        served_name=model.served_name,
        replicas=replicas,
        fallbacks=fallbacks,
        left_out=left_out,
        stream_timeout=pick(spec.stream_idle_s if spec else None, stream_default),
        allowed_fails=allowed,
        cooldown_time=0.0 if lone else pick(spec.cooldown_s if spec else None, routing.cooldown_s),
        health_timeout=pick(spec.health_timeout_s if spec else None, routing.health_timeout_s),
    )
