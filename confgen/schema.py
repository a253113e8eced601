"""Declared schemas of the catalog: a model file and the global settings of vars.env.

Unknown keys are rejected (extra="forbid"); every field says what it holds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Info(_Strict):
    """What a user needs to place a model on a GPU."""

    description: str = Field(min_length=1, description="One line: what the model is for.")
    params: str = Field(min_length=1, description="Parameter count, e.g. '30B total / 3B active'.")
    weights_gb: float = Field(ge=0, description="Size of the weights on disk, GB.")
    gpu_memory_gb: float = Field(ge=0, description="Memory it needs to serve (weights + KV + runtime), GB.")
    device: Literal["gpu", "cpu"] = Field("gpu", description="gpu: needs an NVIDIA GPU; cpu: runs anywhere.")
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


class ModelFile(_Strict):
    """models/<name>.yml"""

    info: Info
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


SETTING_NAMES = frozenset(Settings.model_fields)
