"""Merge, in one place, with one precedence: model file > vars.env (process env over it) > built-ins.

The result is a frozen, typed ResolvedModel: everything a render target or the launcher needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar

from confgen.command import ServeCommand, final_argv, parse_command, served_names
from confgen.errors import ConfgenError, Problem
from confgen.load import GlobalVars
from confgen.schema import Arch, Info, ModelFile, Settings

T = TypeVar("T")

_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - compared, not bound


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_tokens: int


@dataclass(frozen=True)
class Limits:
    max_parallel_requests: int
    timeout: float
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    file: str
    info: Info
    command: ServeCommand
    served_name: str
    host: str
    port: int
    sampling: Sampling
    limits: Limits
    env: dict[str, str] = field(hash=False)
    sources: dict[str, str] = field(hash=False)
    arch: Arch | None = None  # KV-cache arithmetic for the planner (confgen.plan)
    api_host: str = ""  # where the gateway reaches vLLM when not at `host` (containers: VLLM_API_HOST)
    messages_api: str = "translate"  # /v1/messages: "translate" (LiteLLM, to chat completions) or "passthrough"
    responses_api: str = "passthrough"  # /v1/responses: "passthrough" (to vLLM's own) or "translate"

    @property
    def hf_id(self) -> str:
        return self.command.model

    @property
    def served_names(self) -> list[str]:
        """vLLM's --served-model-name: the served name (the one reported), then the HF id if it is one."""
        return served_names(self.served_name, self.hf_id)

    @property
    def argv(self) -> list[str]:
        return final_argv(self.command, self.host, self.port, self.served_names)

    @property
    def api_base(self) -> str:
        """Where the gateway reaches this vLLM: api_host if set, else a wildcard bind is reached on loopback."""
        host = self.api_host or ("127.0.0.1" if self.host in _ANY_ADDRESS else self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    @property
    def max_model_len(self) -> int | None:
        value = self.command.flag_value("--max-model-len")
        try:
            return int(value) if value else None
        except ValueError:
            return None


def merge(name: str, model: ModelFile, gvars: GlobalVars, file: str) -> ResolvedModel:
    s: Settings = gvars.settings
    lit = model.litellm
    sources: dict[str, str] = {}

    def pick(key: str, own: T | None, setting: str) -> T:
        if own is not None:
            sources[key] = file
            return own
        sources[key] = gvars.sources.get(setting, "built-in default")
        inherited: T = getattr(s, setting)
        return inherited

    sampling = Sampling(
        temperature=float(pick("temperature", lit.temperature, "LITELLM_TEMPERATURE")),
        top_p=float(pick("top_p", lit.top_p, "LITELLM_TOP_P")),
        top_k=int(pick("top_k", lit.top_k, "LITELLM_TOP_K")),
        repetition_penalty=float(
            pick("repetition_penalty", lit.repetition_penalty, "LITELLM_REPETITION_PENALTY")
        ),
        max_tokens=int(pick("max_tokens", lit.max_tokens, "LITELLM_MAX_TOKENS")),
    )
    limits = Limits(
        max_parallel_requests=int(
            pick("max_parallel_requests", lit.max_parallel_requests, "MAX_PARALLEL_REQUESTS")
        ),
        timeout=float(pick("timeout", lit.timeout, "LITELLM_REQUEST_TIMEOUT")),
        rpm=lit.rpm,
        tpm=lit.tpm,
    )
    command = parse_command(model.command, f"{file}: command")
    resolved = ResolvedModel(
        name=name,
        file=file,
        info=model.info,
        arch=model.arch,
        command=command,
        served_name=model.serve.served_name or name,
        host=s.VLLM_HOST,
        api_host=s.VLLM_API_HOST.replace("{name}", service_label(name)),
        port=model.serve.port or s.VLLM_PORT,
        sampling=sampling,
        limits=limits,
        env={**gvars.env, **model.env},
        sources=sources,
        messages_api=lit.messages_api,
        responses_api=lit.responses_api,
    )
    _check_max_tokens(resolved)
    return resolved


def service_label(name: str) -> str:
    """A model name as a DNS label (compose service and host names): qwen2.5-1.5b -> qwen2-5-1-5b."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def _check_max_tokens(m: ResolvedModel) -> None:
    limit = m.max_model_len
    if limit is None or m.sampling.max_tokens < limit:
        return
    origin = m.sources["max_tokens"]
    raise ConfgenError([Problem(
        f"{m.file}: litellm.max_tokens",
        f"{m.sampling.max_tokens} (from {origin}) leaves no room for the prompt within "
        f"--max-model-len {limit}: every request that takes the default would fail",
        f"set litellm.max_tokens in {m.file} below {limit}, e.g. {max(limit // 4, 1)}",
    )])
