"""When a plan does not fit: what would (each suggestion alone makes the selection fit)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from confgen.plan.fit import Plan, plan_models
from confgen.plan.gpus import Gpu
from confgen.plan.spec import ModelSpec

_STEP = 1024  # shorter contexts are suggested in whole K tokens


def suggestions(specs: Sequence[ModelSpec], gpu: Gpu, contexts: Sequence[int], concurrencies: Sequence[int],
                others: Mapping[str, Gpu]) -> list[str]:
    def fits(s: Sequence[ModelSpec], ctx: Sequence[int] = contexts, conc: Sequence[int] = concurrencies,
             g: Gpu = gpu) -> Plan | None:
        result = plan_models(s, g, ctx, conc)
        return result if result.fits else None

    found = [_tensor_parallel(gpu, s, contexts[i], concurrencies[i])
             for i, s in enumerate(specs) if s.tensor_parallel > 1]
    found += _variants(specs, fits)
    found += _fp8_kv(specs, gpu, fits)
    found += _shorter_context(specs, contexts, concurrencies, fits)
    found += _fewer_sequences(specs, contexts, concurrencies, fits)
    found += _one_fewer(specs, contexts, concurrencies, fits)
    found += _bigger_gpu(specs, gpu, contexts, concurrencies, others)
    if not found:
        found.append("nothing here makes it fit: even one sequence of 1K tokens leaves the weights too large; "
                     "pick a smaller model or a quantised checkpoint")
    return found


Fits = Callable[..., "Plan | None"]


def _tensor_parallel(gpu: Gpu, spec: ModelSpec, context: int, concurrency: int) -> str:
    rank = plan_models([spec], gpu, [context], [concurrency]).models[0]
    verdict = "fits" if rank.total_gb <= gpu.budget_gb else "does not fit"
    return (f"{spec.name} needs {spec.tensor_parallel} GPUs (--tensor-parallel-size {spec.tensor_parallel}): "
            f"on {spec.tensor_parallel} x {gpu.name} each takes {rank.total_gb:.1f} GB, which {verdict} "
            f"the {gpu.budget_gb:.1f} GB of one")


def _variants(specs: Sequence[ModelSpec], fits: Fits) -> list[str]:
    found = []
    for i, spec in enumerate(specs):
        for variant in spec.arch.weight_variants:
            if variant.weights_gb >= spec.weights_gb:
                continue
            trial = [*specs[:i], spec.with_weights(variant.repo, variant.weights_gb), *specs[i + 1:]]
            result = fits(trial)
            if result is not None:
                found.append(f"use the {variant.dtype} repo {variant.repo} for {spec.name} "
                             f"({variant.weights_gb:g} GB of weights): {result.total_gb:.1f} GB in all")
    return found


def _fp8_kv(specs: Sequence[ModelSpec], gpu: Gpu, fits: Fits) -> list[str]:
    found = []
    for i, spec in enumerate(specs):
        if spec.kv_bytes <= 1 or (spec.is_mla and not gpu.profile.fp8_mla_kv):
            continue
        trial = [*specs[:i], spec.with_kv_dtype("fp8"), *specs[i + 1:]]
        result = fits(trial)
        if result is not None:
            found.append(f"--kv-cache-dtype fp8 for {spec.name} (half the KV cache): {result.total_gb:.1f} GB in all")
    return found


def _shorter_context(specs: Sequence[ModelSpec], contexts: Sequence[int], concurrencies: Sequence[int],
                     fits: Fits) -> list[str]:
    longest = max(contexts)

    def ok(steps: int) -> bool:
        return fits(specs, [min(c, steps * _STEP) for c in contexts], concurrencies) is not None

    best = _largest(1, (longest - 1) // _STEP, ok)
    if best is None:
        return []
    return [f"a shorter context: --context {best}K ({best * _STEP} tokens) instead of {_tokens(longest)}"]


def _fewer_sequences(specs: Sequence[ModelSpec], contexts: Sequence[int], concurrencies: Sequence[int],
                     fits: Fits) -> list[str]:
    most = max(concurrencies)

    def ok(n: int) -> bool:
        return fits(specs, contexts, [min(c, n) for c in concurrencies]) is not None

    best = _largest(1, most - 1, ok)
    if best is None:
        return []
    return [f"fewer sequences: --concurrency {best} instead of {most}"]


def _one_fewer(specs: Sequence[ModelSpec], contexts: Sequence[int], concurrencies: Sequence[int],
               fits: Fits) -> list[str]:
    if len(specs) < 2:
        return []
    found = []
    for i, spec in enumerate(specs):
        rest = [*specs[:i], *specs[i + 1:]]
        result = fits(rest, [*contexts[:i], *contexts[i + 1:]], [*concurrencies[:i], *concurrencies[i + 1:]])
        if result is not None:
            found.append(f"one model fewer: without {spec.name} the rest need {result.total_gb:.1f} GB")
    return found


def _bigger_gpu(specs: Sequence[ModelSpec], gpu: Gpu, contexts: Sequence[int], concurrencies: Sequence[int],
                others: Mapping[str, Gpu]) -> list[str]:
    bigger = sorted((g for g in others.values() if g.budget_gb > gpu.budget_gb), key=lambda g: g.budget_gb)
    for other in bigger:
        result = plan_models(specs, other, contexts, concurrencies)
        if result.fits:
            return [f"a bigger GPU: --gpu {other.name} ({other.profile.description}; "
                    f"{other.budget_gb:.1f} GB for vLLM)"]
    return []


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest n in [low, high] with ok(n), for ok true up to some n and false after (None if none)."""
    if high < low or not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _tokens(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)
