"""Declared schemas of the catalog: a model file and the global settings of vars.env.

Unknown keys are rejected (extra="forbid"); every field says what it holds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from confgen.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size), Field(ge=1)]


def _env_value(value: object) -> object:
    # YAML turns `yes`/`on` into booleans; an env value must be written as the string it is.
    if isinstance(value, bool):
        raise ValueError(f"expected a string, got the boolean {value!r}: quote it, e.g. \"1\"")
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value)]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def redis_off(url: str) -> bool:
    """REDIS_URL (CONFGEN_REDIS_URL for the gateway) that means "no Redis": limits counted per process."""
    return url.strip().lower() in {"", "none", "off"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Info(_Strict):
    """What a user needs to place a model on a GPU."""

    description: str = Field(min_length=1, description="One line: what the model is for.")
    params: str = Field(min_length=1, description="Parameter count, e.g. '30B total / 3B active'.")
    weights_gb: float = Field(ge=0, description="Size of the weights on disk, GB.")
    gpu_memory_gb: float = Field(ge=0, description="Memory it needs to serve (weights + KV + runtime), GB.")
    device: Literal["gpu", "cpu"] = Field("gpu", description="gpu: needs an NVIDIA GPU; cpu: runs anywhere.")
    build: str | None = Field(
        None, pattern=r"^scripts/[A-Za-z0-9_.-]+\.py$",
        description="Weights under .local/models/: the script that builds them there once, run with the vLLM "
                    "venv's python as `SCRIPT --out DIR [--force]`, e.g. scripts/build_tiny_model.py.")
    notes: list[str] = Field(default_factory=list, description="Why a flag differs from the seeds, caveats.")


class Serve(_Strict):
    """Where the model's vLLM listens and the name clients use."""

    port: int | None = Field(None, ge=1, le=65535, description="vLLM port (default VLLM_PORT).")
    served_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", description="Name clients send (default: file name)."
    )


class LiteLLMParams(_Strict):
    """Sampling defaults and per-model limits; unset values come from vars.env."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    max_tokens: Size | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_parallel_requests: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0, description="Seconds before a request to this model fails.")
    # How the gateway serves the coding-agent APIs (README: Use with your coding agent).
    messages_api: Literal["translate", "passthrough"] = Field(
        "translate", description="/v1/messages (Claude Code): LiteLLM translates it to chat completions, or "
                                 "passes it untranslated to vLLM's own /v1/messages.")
    responses_api: Literal["passthrough", "translate"] = Field(
        "passthrough", description="/v1/responses (Codex): passed to vLLM's own /v1/responses, or translated "
                                   "by LiteLLM to chat completions (for servers without /v1/responses).")


class SlidingWindow(_Strict):
    """Layers that keep KV only for the last `window` tokens of each sequence."""

    layers: int = Field(ge=1, description="How many layers use the window.")
    window: int = Field(ge=1, description="Window length, tokens.")


class WeightVariant(_Strict):
    """Another checkpoint of the same model (e.g. the FP8 repo) the planner may suggest."""

    repo: str = Field(min_length=1, description="HuggingFace id of the variant.")
    weights_gb: float = Field(gt=0, description="Its weights on disk, GB.")
    dtype: str = Field(min_length=1, description="Its weight format, e.g. FP8, BF16.")


class Arch(_Strict):
    """The numbers that set KV-cache bytes per token (read by `confgen plan`; docs/planner.md).

    Full attention: layers_with_kv x 2 (K and V) x kv_heads x head_dim x KV bytes per token.
    MLA: layers_with_kv x mla_latent_dim x KV bytes per token.
    """

    dtype: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="Activation dtype: what --kv-cache-dtype auto stores (bf16/fp16 = 2 bytes).")
    layers: int = Field(ge=1, description="Hidden layers in all.")
    layers_with_kv: int = Field(ge=0, description="Full-attention layers that keep KV for every token.")
    kv_heads: int | None = Field(None, ge=1, description="KV heads per full-attention layer (not MLA).")
    head_dim: int | None = Field(None, ge=1, description="Head dimension (not MLA).")
    mla_latent_dim: int | None = Field(
        None, ge=1, description="MLA: compressed KV per layer and token (kv_lora_rank + rope dim).")
    sliding_window: SlidingWindow | None = None
    state_mb_per_seq: float | None = Field(
        None, gt=0, description="Fixed per-sequence state (linear attention / DeltaNet), MB.")
    native_context: Size = Field(description="max_position_embeddings: the longest context without overrides.")
    weight_variants: list[WeightVariant] = Field(
        default_factory=list, description="Other checkpoints of this model (FP8 / BF16 repos).")

    @model_validator(mode="after")
    def _one_kv_layout(self) -> Arch:
        gqa = self.kv_heads is not None or self.head_dim is not None
        if self.mla_latent_dim is not None and gqa:
            raise ValueError("give either mla_latent_dim (MLA) or kv_heads and head_dim, not both")
        if self.mla_latent_dim is None and (self.kv_heads is None or self.head_dim is None):
            raise ValueError("give kv_heads and head_dim (or mla_latent_dim for an MLA model)")
        windowed = self.sliding_window.layers if self.sliding_window else 0
        if self.layers_with_kv + windowed == 0 and self.state_mb_per_seq is None:
            raise ValueError("the model keeps nothing per sequence: set layers_with_kv, sliding_window or "
                             "state_mb_per_seq")
        if self.layers_with_kv + windowed > self.layers:
            raise ValueError(f"layers_with_kv ({self.layers_with_kv}) plus sliding_window.layers ({windowed}) "
                             f"exceed layers ({self.layers})")
        return self


class ModelFile(_Strict):
    """models/<name>.yml"""

    info: Info
    arch: Arch | None = Field(None, description="KV-cache arithmetic for `confgen plan` (every shipped file has it).")
    serve: Serve = Serve()
    command: str = Field(min_length=1, description="The `vllm serve <model> ...` line.")
    env: dict[Annotated[str, Field(pattern=ENV_NAME)], EnvValue] = Field(default_factory=dict)
    litellm: LiteLLMParams = LiteLLMParams()

    @field_validator("env", mode="before")
    @classmethod
    def _env_none_is_empty(cls, value: object) -> object:
        return {} if value is None else value


class Settings(_Strict):
    """Typed global settings from vars.env (and the process environment, which overrides it)."""

    LITELLM_TEMPERATURE: float = Field(0.7, ge=0, le=2)
    LITELLM_TOP_P: float = Field(0.9, gt=0, le=1)
    LITELLM_TOP_K: int = Field(50, ge=-1)
    LITELLM_REPETITION_PENALTY: float = Field(1.1, gt=0, le=2)
    LITELLM_MAX_TOKENS: Size = 131072
    MAX_PARALLEL_REQUESTS: int = Field(16, ge=1)
    LITELLM_REQUEST_TIMEOUT: float = Field(600, gt=0)
    LITELLM_HOST: str = "127.0.0.1"
    LITELLM_PORT: int = Field(4000, ge=1, le=65535)
    LITELLM_NUM_WORKERS: int = Field(1, ge=1, le=64)
    VLLM_HOST: str = "127.0.0.1"
    VLLM_PORT: int = Field(8000, ge=1, le=65535)
    # Containers: the host name the gateway uses for vLLM when it differs from VLLM_HOST (the bind
    # address); `{name}` stands for the model's service label (docker-compose.yml, confgen compose).
    VLLM_API_HOST: str = Field("", pattern=r"^[A-Za-z0-9.:{}\[\]-]*$")
    # The local Prometheus (./runMe.sh up --monitoring); it always binds 127.0.0.1.
    PROMETHEUS_PORT: int = Field(9090, ge=1, le=65535)
    # API keys and the usage ledger (README: Keys and usage). The gateway gets it as CONFGEN_DATABASE_URL:
    # LiteLLM itself exits at start-up when DATABASE_URL is set and Prisma is missing (FINDINGS).
    DATABASE_URL: str = Field("postgresql://postgres@127.0.0.1:5432/confgen", min_length=1)
    # Shared rate-limit counters across gateway instances; "none": each instance counts on its own.
    REDIS_URL: str = Field("redis://127.0.0.1:6379/0", min_length=1)
    # Where usage rows wait while PostgreSQL is down ("" = <run folder>/spool).
    LEDGER_SPOOL_DIR: str = ""
    # Seconds a key's record is cached in each gateway: a revocation lands within about this long.
    KEY_CACHE_TTL: float = Field(5.0, gt=0, le=300)
    # While PostgreSQL is down, a cached key is served at most this many seconds after the database last
    # confirmed it (15 minutes): a revocation made just before an outage lands within this long.
    KEY_STALE_MAX: float = Field(900.0, gt=0, le=86400)
    # Request limits at the gateway's edge (confgen/gateway/edge.py): 413, 431 and 408 above them.
    MAX_BODY_MB: float = Field(32.0, gt=0, le=1024)
    MAX_HEADER_KB: float = Field(32.0, gt=0, le=1024)
    BODY_TIMEOUT: float = Field(30.0, gt=0, le=3600)
    # The relay lane for vLLM-native requests (confgen/gateway/lane.py): "off" sends everything through LiteLLM.
    RELAY_LANE: Literal["on", "off"] = "on"

    @field_validator("REDIS_URL")
    @classmethod
    def _shared_counters_for_several_workers(cls, value: str, info: ValidationInfo) -> str:
        # Fields are validated in order: LITELLM_NUM_WORKERS (above) is known here unless it was invalid.
        workers = info.data.get("LITELLM_NUM_WORKERS", 1)
        if workers > 1 and redis_off(value):
            raise ValueError(f"is {value!r} (no Redis) but LITELLM_NUM_WORKERS={workers}: each of the {workers} "
                             "gateway workers would count rate limits, parallel slots and budgets on its own, so "
                             f"every key would get {workers} times its limits; set REDIS_URL to a Redis (e.g. "
                             "redis://127.0.0.1:6379/0) or LITELLM_NUM_WORKERS=1")
        return value


SETTING_NAMES = frozenset(Settings.model_fields)
