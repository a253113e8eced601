"""What the planner needs from one model: weights, the KV arithmetic, the KV dtype the command selects.

Bytes per token (one device, tensor-parallel size tp):
  full attention  layers_with_kv x 2 (K and V) x max(1, kv_heads // tp) x head_dim x kv_bytes
  MLA             layers_with_kv x mla_latent_dim x kv_bytes (the latent is not split across ranks)
Per sequence, whatever the context: sliding-window layers keep min(window, context) tokens, and
linear-attention (DeltaNet) layers keep a fixed state (state_mb_per_seq / tp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from confgen.errors import ConfgenError, Problem
from confgen.merge import ResolvedModel
from confgen.schema import Arch

# --kv-cache-dtype -> bytes per element. "auto" stores the activation dtype (--dtype, else arch.dtype).
KV_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1}
_ARCH_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
_DTYPE_FLAG_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float": 4, "float32": 4}
LONG_CONTEXT_ENV = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"


@dataclass(frozen=True)
class ModelSpec:
    """One model as the planner sees it (per device figures are derived from these)."""

    name: str
    file: str
    hf_id: str
    weights_gb: float
    arch: Arch
    kv_cache_dtype: str  # as the command gives it, e.g. "fp8" or "auto"
    kv_bytes: int  # bytes per KV element for that dtype
    tensor_parallel: int = 1
    max_model_len: int | None = None  # the command's --max-model-len
    max_num_seqs: int | None = None  # the command's --max-num-seqs
    gpu_memory_utilization: float | None = None  # the command's own value, if any
    allow_long_context: bool = False  # VLLM_ALLOW_LONG_MAX_MODEL_LEN is set

    @property
    def is_mla(self) -> bool:
        return self.arch.mla_latent_dim is not None

    @property
    def default_context(self) -> int:
        return self.max_model_len or self.arch.native_context

    @property
    def default_concurrency(self) -> int:
        return self.max_num_seqs or 1

    def with_weights(self, hf_id: str, weights_gb: float) -> ModelSpec:
        return replace(self, hf_id=hf_id, weights_gb=weights_gb)

    def with_kv_dtype(self, kv_cache_dtype: str) -> ModelSpec:
        return replace(self, kv_cache_dtype=kv_cache_dtype, kv_bytes=KV_DTYPE_BYTES[kv_cache_dtype])


def kv_bytes_per_token(arch: Arch, kv_bytes: int, tensor_parallel: int = 1) -> int:
    """KV-cache bytes one token takes on one device, over the layers that keep every token."""
    return arch.layers_with_kv * _layer_bytes_per_token(arch, kv_bytes, tensor_parallel)


def fixed_bytes_per_seq(arch: Arch, kv_bytes: int, context: int, tensor_parallel: int = 1) -> int:
    """Per-sequence memory that does not grow past the window: windowed layers and linear-attention state."""
    total = 0
    if arch.sliding_window is not None:
        window = min(arch.sliding_window.window, context)
        total += arch.sliding_window.layers * _layer_bytes_per_token(arch, kv_bytes, tensor_parallel) * window
    if arch.state_mb_per_seq is not None:
        total += math.ceil(arch.state_mb_per_seq * 1e6 / tensor_parallel)
    return total


def _layer_bytes_per_token(arch: Arch, kv_bytes: int, tensor_parallel: int) -> int:
    if arch.mla_latent_dim is not None:
        return arch.mla_latent_dim * kv_bytes
    heads = max(1, (arch.kv_heads or 0) // tensor_parallel)
    return 2 * heads * (arch.head_dim or 0) * kv_bytes


def spec_from(model: ResolvedModel) -> ModelSpec:
    """The planner's view of a merged model; a file without `arch:` cannot be planned."""
    if model.arch is None:
        raise ConfgenError.one(f"{model.file}: arch", "missing: the planner cannot size this model's KV cache",
                               "add the arch section (layers, layers_with_kv, kv_heads, head_dim or "
                               "mla_latent_dim, native_context); see docs/planner.md")
    cmd = model.command
    kv_dtype = cmd.flag_value("--kv-cache-dtype") or "auto"
    return ModelSpec(
        name=model.name,
        file=model.file,
        hf_id=model.hf_id,
        weights_gb=model.info.weights_gb,
        arch=model.arch,
        kv_cache_dtype=kv_dtype,
        kv_bytes=_kv_bytes(model, kv_dtype),
        tensor_parallel=_int_flag(model, "--tensor-parallel-size", "-tp") or 1,
        max_model_len=model.max_model_len,
        max_num_seqs=_int_flag(model, "--max-num-seqs"),
        gpu_memory_utilization=_float_flag(model, "--gpu-memory-utilization"),
        allow_long_context=allows_long_context(model.env),
    )


def allows_long_context(env: dict[str, str]) -> bool:
    """vLLM reads VLLM_ALLOW_LONG_MAX_MODEL_LEN as true for "1" or "true"."""
    return env.get(LONG_CONTEXT_ENV, "0").strip().lower() in {"1", "true"}


def specs_from(models: Sequence[ResolvedModel]) -> list[ModelSpec]:
    """spec_from for each model; the problems of all of them are raised together."""
    specs: list[ModelSpec] = []
    problems: list[Problem] = []
    for model in models:
        try:
            specs.append(spec_from(model))
        except ConfgenError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfgenError(problems)
    return specs


def _kv_bytes(model: ResolvedModel, kv_dtype: str) -> int:
    assert model.arch is not None  # noqa: S101 - spec_from checked it
    if kv_dtype == "auto":
        dtype = (model.command.flag_value("--dtype") or "auto").lower()
        return _DTYPE_FLAG_BYTES.get(dtype, _ARCH_DTYPE_BYTES[model.arch.dtype])
    if kv_dtype not in KV_DTYPE_BYTES:
        raise ConfgenError([Problem(f"{model.file}: command: --kv-cache-dtype",
                                    f"the planner does not know how many bytes {kv_dtype!r} takes",
                                    f"plan with one of: auto, {', '.join(KV_DTYPE_BYTES)}")])
    return KV_DTYPE_BYTES[kv_dtype]


def _int_flag(model: ResolvedModel, *flags: str) -> int | None:
    value = _flag(model, *flags)
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float_flag(model: ResolvedModel, flag: str) -> float | None:
    value = _flag(model, flag)
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _flag(model: ResolvedModel, *flags: str) -> str | None:
    args = model.command.args
    for flag in flags:
        if not flag.startswith("--"):  # a short alias such as -tp: no --a_b spelling, no "=value"
            for i, arg in enumerate(args[:-1]):
                if arg == flag:
                    return args[i + 1]
            continue
        value = model.command.flag_value(flag)
        if value:
            return value
    return None
