"""The declared schema of deployments.yml: where each model runs and how the gateway routes to it.

Unknown keys are rejected (extra="forbid"); every field says what it holds. Defaults are chosen for LLM
serving: a long generation is not a failure, and a model with one replica is never benched.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from confgen.durations import parse_duration
from confgen.load import MODEL_NAME

# A vLLM OpenAI base: http(s)://host[:port][/path], e.g. http://gpu-a.lan:8000/v1. No credentials in it:
# every node is reached with the VLLM_API_KEY secret.
API_BASE = r"^https?://[A-Za-z0-9._~\[\]:-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$"
ModelName = Annotated[str, Field(pattern=MODEL_NAME.pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Replica(_Strict):
    """One vLLM serving the model: on this host or another."""

    api_base: str = Field(pattern=API_BASE, description="Its OpenAI base URL, e.g. http://gpu-a.lan:8000/v1.")
    weight: int = Field(1, ge=1, le=1000, description="Share of the traffic relative to the other replicas.")


class Overrides(_Strict):
    """Per-model changes to the routing defaults; unset values come from `routing:`."""

    stream_idle_s: float | None = Field(
        None, gt=0, description="Streaming: longest wait for the first token and between tokens.")
    allowed_fails: int | None = Field(None, ge=0, description="Failures within cooldown_s before a replica is benched.")
    cooldown_s: float | None = Field(None, gt=0, description="How long a failing replica is benched.")
    health_timeout_s: float | None = Field(None, gt=0, description="Longest a health probe may take.")


class ModelDeployment(Overrides):
    """models.<name>: the replicas of one catalog model and where to go when all of them fail."""

    replicas: list[Replica] = Field(min_length=1, description="The vLLMs serving this model.")
    fallbacks: list[ModelName] = Field(
        default_factory=list, description="Catalog models tried in order when every replica failed.")


class Routing(_Strict):
    """How the gateway picks a replica and what it does when one fails."""

    strategy: Literal["simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2"] = Field(
        "simple-shuffle", description="simple-shuffle: random, by weight; the others: LiteLLM's of that name.")
    retries: int = Field(2, ge=0, le=10, description="Attempts after the first, on any healthy replica.")
    stream_idle_s: float = Field(
        120, gt=0, description="Streaming, models with a replica or fallback to go to: longest wait for the first "
                               "token and between tokens before the attempt is retried elsewhere.")
    allowed_fails: int = Field(1, ge=0, description="Failures within cooldown_s before a replica is benched.")
    cooldown_s: float = Field(30, gt=0, description="How long a failing replica is benched.")
    health_interval_s: int = Field(10, ge=1, le=3600, description="Seconds between health probes of each replica.")
    health_timeout_s: float = Field(20, gt=0, description="Longest a health probe (a one-token request) may take.")


class Gateway(_Strict):
    """The gateway instances serving this config."""

    instances: int = Field(1, ge=1, le=64, description="Gateways behind one load balancer; more than one share "
                                                       "cooldowns and health through Redis (REDIS_URL).")
    redis_namespace: str = Field("confgen-router", pattern=r"^[A-Za-z0-9._:-]{1,64}$",
                                 description="Prefix of the router's keys in Redis.")


def _seconds(value: object) -> object:
    """`ttl: 900` or `ttl: 15m`: seconds as a number or a duration (confgen/durations.py)."""
    return parse_duration(value) if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
SwapMethod = Literal["auto", "sleep-1", "sleep-2", "stop"]


class OnDemandModel(_Strict):
    """on_demand.models.<name>: one model the controller starts, sleeps and stops as requests need it."""

    ttl: Seconds | None = Field(None, description="Idle time (seconds or 15m) before it sleeps or stops; "
                                                  "unset: it stays until another model needs its memory.")
    pin: bool = Field(False, description="Never evicted (loaded at start, like preload).")
    preload: bool = Field(False, description="Loaded when the controller starts.")
    load_timeout_s: Seconds = Field(600, description="Longest a request waits for this model to become ready; "
                                                     "then 503 with Retry-After.")
    group: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
                              description="Models of one group are loaded and evicted together.")


class OnDemand(_Strict):
    """on_demand: every model listed is callable through the gateway; the controller keeps resident what
    the GPU profile's budget holds (the fit planner's numbers) and evicts the least recently used."""

    enabled: bool = Field(True, description="false: the section is kept but the stack runs as without it.")
    gpu: str = Field("dgx-spark", description="GPU profile whose memory budget the resident models share "
                                             "(confgen plan --list-gpus; your own in gpus/<name>.yml).")
    swap: SwapMethod = Field("auto", description="How a model leaves memory: sleep-1 / sleep-2 (vLLM sleep mode) "
                                                 "or stop; auto: the GPU profile's default (CPU models: stop).")
    in_flight_wait_s: Seconds = Field(60, description="Longest a load waits for busy models to finish before it "
                                                      "is refused.")
    controller_port: int = Field(4100, ge=1, le=65535, description="The controller's API, on 127.0.0.1.")
    models: dict[ModelName, OnDemandModel] = Field(min_length=1, description="Catalog model -> its settings.")


class DeploymentsFile(_Strict):
    """deployments.yml"""

    routing: Routing = Routing()
    gateway: Gateway = Gateway()
    on_demand: OnDemand | None = Field(None, description="Models loaded on demand (docs/on-demand.md).")
    models: dict[ModelName, ModelDeployment] = Field(
        default_factory=dict, description="Catalog model -> its replicas; a model not listed has one replica, "
                                          "its vLLM from the model file.")
