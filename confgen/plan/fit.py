"""Does a set of models fit one GPU? Per model: weights + KV for context x concurrency + runtime overhead.

Shares are `--gpu-memory-utilization` values (fractions of the whole device, as vLLM reads them),
rounded up to hundredths so each covers its model; the plan fits when they add up to at most the
profile's ceiling. Spare hundredths are shared out in proportion to each model's total (more KV room)
unless fill=False.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from confgen.plan.gpus import Gpu
from confgen.plan.spec import ModelSpec, fixed_bytes_per_seq, kv_bytes_per_token

GB = 1e9
# Runtime outside weights and KV (CUDA/torch context, activations of the profiling run, CUDA graphs):
# a fixed part plus a part that grows with the model. Calibrated on the reference's §1 column, which
# allows "about 2-6 GB" (docs/planner.md lists the error per model).
RUNTIME_BASE_GB = 2.0
RUNTIME_WEIGHT_FRACTION = 0.04
_EPS = 1e-9


@dataclass(frozen=True)
class ModelPlan:
    """One model on one device of the profile (a tensor-parallel model: one of its ranks)."""

    name: str
    hf_id: str
    context: int
    concurrency: int
    kv_cache_dtype: str
    kv_element_bytes: int  # what kv_cache_dtype stores per element (auto: the activation dtype)
    kv_bytes_per_token: int
    tensor_parallel: int
    weights_gb: float
    kv_gb: float
    overhead_gb: float
    total_gb: float
    needed_share: float  # total / device memory, rounded up to hundredths
    gpu_memory_utilization: float  # the share to pass to vLLM (>= needed_share when the plan fits)
    kv_capacity_tokens: int  # tokens of KV the assigned share holds
    full_length_seqs: int  # sequences of `context` tokens the assigned share holds
    warnings: tuple[str, ...] = ()

    @property
    def vllm_args(self) -> tuple[str, ...]:
        return ("--gpu-memory-utilization", f"{self.gpu_memory_utilization:.2f}",
                "--max-model-len", str(self.context), "--max-num-seqs", str(self.concurrency))


@dataclass(frozen=True)
class Plan:
    """The verdict for a selection on one GPU profile."""

    gpu: Gpu
    models: tuple[ModelPlan, ...]
    fits: bool
    total_gb: float
    short_gb: float  # 0 when it fits on memory
    reasons: tuple[str, ...] = ()  # why it does not fit
    suggestions: tuple[str, ...] = ()  # what would fit instead

    @property
    def budget_gb(self) -> float:
        return self.gpu.budget_gb

    @property
    def ceiling(self) -> float:
        return _floor_pct(self.gpu.budget_gb / self.gpu.profile.memory_gb) / 100

    @property
    def shares(self) -> dict[str, float]:
        """--gpu-memory-utilization per model name."""
        return {m.name: m.gpu_memory_utilization for m in self.models}

    @property
    def share_sum(self) -> float:
        return sum(_pct(m.gpu_memory_utilization) for m in self.models) / 100


def plan_models(specs: Sequence[ModelSpec], gpu: Gpu, contexts: Sequence[int], concurrencies: Sequence[int],
                fill: bool = True) -> Plan:
    """The plan for given per-model contexts and concurrencies (no suggestions)."""
    if not specs:
        raise ValueError("plan needs at least one model")
    if min(contexts) < 1 or min(concurrencies) < 1:
        raise ValueError("context and concurrency must be at least 1")
    memory = gpu.profile.memory_gb
    needs = [_need(s, c, n) for s, c, n in zip(specs, contexts, concurrencies, strict=True)]
    need_pct = [_ceil_pct(total / memory) for _, _, _, total in needs]
    ceiling_pct = _floor_pct(gpu.budget_gb / memory)
    fits_memory = sum(need_pct) <= ceiling_pct
    split = [s for s in specs if s.tensor_parallel > 1]
    fits = fits_memory and not split
    assigned = list(need_pct)
    total_gb = sum(n[3] for n in needs)
    if fits and fill:
        slack = ceiling_pct - sum(need_pct)
        assigned = [p + math.floor(slack * n[3] / total_gb + _EPS) for p, n in zip(need_pct, needs, strict=True)]
    short = 0.0 if fits_memory else max(total_gb, sum(need_pct) * memory / 100) - gpu.budget_gb
    models = tuple(
        _model_plan(s, gpu, context=c, concurrency=n, need=need, need_pct=p_need, assigned_pct=p_assigned)
        for s, c, n, need, p_need, p_assigned in zip(specs, contexts, concurrencies, needs, need_pct, assigned,
                                                       strict=True)
    )
    reasons = [f"{s.name} runs over {s.tensor_parallel} GPUs (--tensor-parallel-size {s.tensor_parallel}) and "
               f"this plan is for one {gpu.name}; the table shows one GPU's part; on a single GPU it would need "
               f"{_need(replace(s, tensor_parallel=1), c, n)[3]:.1f} GB"
               for s, c, n in zip(specs, contexts, concurrencies, strict=True) if s.tensor_parallel > 1]
    if not fits_memory:
        reasons.append(f"needs {total_gb:.1f} GB, {gpu.name} has {gpu.budget_gb:.1f} GB for vLLM "
                       f"({ceiling_pct / 100:.2f} of {memory:g} GB): short by {short:.1f} GB")
    return Plan(gpu, models, fits, total_gb, round(short, 2), tuple(reasons))


def _need(spec: ModelSpec, context: int, concurrency: int) -> tuple[int, float, float, float]:
    """(KV bytes per token, KV GB, overhead GB, total GB) on one device."""
    tp = spec.tensor_parallel
    per_token = kv_bytes_per_token(spec.arch, spec.kv_bytes, tp)
    per_seq = per_token * context + fixed_bytes_per_seq(spec.arch, spec.kv_bytes, context, tp)
    kv_gb = per_seq * concurrency / GB
    weights = spec.weights_gb / tp
    overhead = RUNTIME_BASE_GB + RUNTIME_WEIGHT_FRACTION * weights
    return per_token, kv_gb, overhead, weights + kv_gb + overhead


def _model_plan(spec: ModelSpec, gpu: Gpu, *, context: int, concurrency: int,
                need: tuple[int, float, float, float], need_pct: int, assigned_pct: int) -> ModelPlan:
    per_token, kv_gb, overhead, total = need
    weights = spec.weights_gb / spec.tensor_parallel
    fixed = fixed_bytes_per_seq(spec.arch, spec.kv_bytes, context, spec.tensor_parallel)
    room = max(assigned_pct / 100 * gpu.profile.memory_gb - weights - overhead, 0.0) * GB
    capacity = math.floor(max(room - fixed * concurrency, 0) / per_token) if per_token else 0
    seqs = math.floor(room / (per_token * context + fixed) + _EPS) if per_token * context + fixed else 0
    return ModelPlan(
        name=spec.name, hf_id=spec.hf_id, context=context, concurrency=concurrency,
        kv_cache_dtype=spec.kv_cache_dtype, kv_element_bytes=spec.kv_bytes, kv_bytes_per_token=per_token,
        tensor_parallel=spec.tensor_parallel,
        weights_gb=weights, kv_gb=kv_gb, overhead_gb=overhead, total_gb=total,
        needed_share=need_pct / 100, gpu_memory_utilization=assigned_pct / 100,
        kv_capacity_tokens=capacity, full_length_seqs=seqs,
        warnings=tuple(_warnings(spec, gpu, context, need_pct)),
    )


def _warnings(spec: ModelSpec, gpu: Gpu, context: int, need_pct: int) -> list[str]:
    found = []
    native = spec.arch.native_context
    if context > native and not spec.allow_long_context:
        found.append(f"{spec.name}: {context} tokens is past its native context {native}: vLLM refuses "
                     f"--max-model-len {context} unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set")
    if spec.is_mla and spec.kv_cache_dtype.startswith("fp8") and not gpu.profile.fp8_mla_kv:
        found.append(f"{spec.name}: an fp8 KV cache on an MLA model does not start on {gpu.name} "
                     "(no valid attention backend); use the bf16 KV cache (--kv-cache-dtype auto)")
    own = spec.gpu_memory_utilization
    if own is not None and _pct(own) < need_pct:
        found.append(f"{spec.file} sets --gpu-memory-utilization {own:g}, below the {need_pct / 100:.2f} "
                     "this plan needs: use the plan's value")
    return found


def _pct(fraction: float) -> int:
    return round(fraction * 100)


def _ceil_pct(fraction: float) -> int:
    return math.ceil(fraction * 100 - _EPS)


def _floor_pct(fraction: float) -> int:
    return math.floor(fraction * 100 + _EPS)
