"""A plan as text (a table per model, the vLLM flags, the verdict) or as a JSON-ready dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confgen.plan.fit import ModelPlan, Plan
from confgen.plan.gpus import Gpu


def text(plan: Plan) -> str:
    gpu = plan.gpu
    lines = [f"{gpu.name}: {gpu.profile.description}", f"  vLLM may take {_budget(gpu)}", ""]
    rows = [("MODEL", "CONTEXT", "SEQS", "KV DTYPE", "WEIGHTS", "KV", "OVERHEAD", "TOTAL", "SHARE")]
    rows += [(m.name, _tokens(m.context), str(m.concurrency), _kv_dtype(m), _gb(m.weights_gb), _gb(m.kv_gb),
              _gb(m.overhead_gb), _gb(m.total_gb), f"{m.needed_share:.2f}") for m in plan.models]
    rows.append(("all", "", "", "", "", "", "", _gb(plan.total_gb),
                 f"{sum(m.needed_share for m in plan.models):.2f} of {plan.ceiling:.2f}"))
    lines += _table(rows)
    lines += ["", "vLLM flags" + (" (the spare share is KV room):" if plan.fits else " (what each would need):")]
    width = max(len(m.name) for m in plan.models)
    for m in plan.models:
        room = f"   # KV room {m.kv_capacity_tokens:,} tokens = {m.full_length_seqs} x {_tokens(m.context)}"
        lines.append(f"  {m.name.ljust(width)}  {' '.join(m.vllm_args)}{room if plan.fits else ''}")
    warnings = [w for m in plan.models for w in m.warnings]
    lines += [""] + [f"warning: {w}" for w in warnings] if warnings else []
    lines.append("")
    if plan.fits:
        spare = plan.budget_gb - plan.total_gb
        lines.append(f"verdict: fits: {plan.total_gb:.1f} of {plan.budget_gb:.1f} GB ({spare:.1f} GB spare)")
    else:
        lines.append("verdict: does not fit" + (f" by {plan.short_gb:.1f} GB" if plan.short_gb else ""))
        lines += [f"  - {reason}" for reason in plan.reasons]
        lines.append("what would fit:")
        lines += [f"  - {s}" for s in plan.suggestions]
    return "\n".join(lines)


def as_dict(plan: Plan) -> dict[str, Any]:
    gpu = plan.gpu
    return {
        "gpu": {"name": gpu.name, "description": gpu.profile.description, "memory_gb": gpu.profile.memory_gb,
                "unified": gpu.profile.unified, "ceiling": plan.ceiling, "budget_gb": round(plan.budget_gb, 3),
                "source": gpu.source},
        "fits": plan.fits,
        "total_gb": round(plan.total_gb, 3),
        "short_gb": plan.short_gb,
        "share_sum": plan.share_sum,
        "reasons": list(plan.reasons),
        "suggestions": list(plan.suggestions),
        "models": [_model(m) for m in plan.models],
    }


def _model(m: ModelPlan) -> dict[str, Any]:
    return {
        "name": m.name, "hf_id": m.hf_id, "context": m.context, "concurrency": m.concurrency,
        "kv_cache_dtype": m.kv_cache_dtype, "kv_element_bytes": m.kv_element_bytes,
        "kv_bytes_per_token": m.kv_bytes_per_token, "tensor_parallel_size": m.tensor_parallel,
        "weights_gb": round(m.weights_gb, 3), "kv_gb": round(m.kv_gb, 3), "overhead_gb": round(m.overhead_gb, 3),
        "total_gb": round(m.total_gb, 3), "needed_share": m.needed_share,
        "gpu_memory_utilization": m.gpu_memory_utilization, "max_model_len": m.context,
        "max_num_seqs": m.concurrency, "kv_capacity_tokens": m.kv_capacity_tokens,
        "full_length_seqs": m.full_length_seqs, "vllm_args": list(m.vllm_args), "warnings": list(m.warnings),
    }


def gpu_list(gpus: Mapping[str, Gpu]) -> str:
    rows = [("NAME", "MEMORY", "CEILING", "FOR VLLM", "FROM", "DESCRIPTION")]
    rows += [(g.name, f"{g.profile.memory_gb:g} GB", f"{g.profile.ceiling:.2f}", _gb(g.budget_gb), g.source,
              g.profile.description) for g in sorted(gpus.values(), key=lambda g: (g.budget_gb, g.name))]
    return "\n".join(_table(rows))


def _budget(gpu: Gpu) -> str:
    p = gpu.profile
    kind = "unified memory" if p.unified else "device memory"
    reserve = f", {p.os_reserve_gb:g} GB kept for the OS" if p.os_reserve_gb else ""
    return f"{gpu.budget_gb:.1f} GB: ceiling {p.ceiling:.2f} of {p.memory_gb:g} GB {kind}{reserve}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _kv_dtype(m: ModelPlan) -> str:
    return f"auto ({m.kv_element_bytes} B)" if m.kv_cache_dtype == "auto" else m.kv_cache_dtype


def _gb(value: float) -> str:
    if value >= 1 or value == 0:
        return f"{value:.1f} GB"
    return f"{value:.2f} GB" if value >= 0.01 else f"{value * 1000:.1f} MB"


def _tokens(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)
