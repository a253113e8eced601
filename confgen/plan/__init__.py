"""GPU fit planner: will these models fit this GPU, and what `--gpu-memory-utilization` does each get?

Per model, on one device: weights (info.weights_gb / tensor-parallel size) + KV cache for
context x concurrency (the model file's `arch:` section and the command's --kv-cache-dtype) +
runtime overhead (RUNTIME_BASE_GB + RUNTIME_WEIGHT_FRACTION x weights). The selection fits when the
shares (each total / device memory, rounded up to hundredths) add up to at most the profile's
ceiling. Method, error against the reference figures and limits: docs/planner.md.

API for other code (pure functions, frozen results):

    from confgen.plan import plan_selection
    result = plan_selection(selection, "dgx-spark", context=32768, concurrency=4)
    if not result.fits:
        raise ConfgenError.one("--gpu", "; ".join(result.reasons), "; ".join(result.suggestions))
    result.shares                 # {"gpt-oss-120b": 0.64, "gpt-oss-20b": 0.16}, sum <= result.ceiling
    for m in result.models:       # ModelPlan, in selection order
        m.vllm_args               # ("--gpu-memory-utilization", "0.64", "--max-model-len", "32768", ...)

- plan_selection(selection, gpu_name, context=None, concurrency=None, *, fill=True) -> Plan.
  context / concurrency None: each model's own --max-model-len (else its native context) and
  --max-num-seqs (else 1). fill=True shares the spare ceiling out as KV room; fill=False gives each
  model just what it needs. Raises ConfgenError for an unknown GPU (exit 2), a model file without
  `arch:` or a GPU profile file that does not validate.
- plan(specs, gpu, context=None, concurrency=None, *, others=None, fill=True) -> Plan: the same on
  ModelSpec values (spec_from(resolved_model)), e.g. to try another checkpoint.
- kv_bytes_per_token(arch, kv_bytes, tensor_parallel=1) -> int.
- load_gpus(project) -> ({name: Gpu}, problems); get_gpu(project, name) -> (Gpu, all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from confgen.catalog import Selection
from confgen.plan.fit import RUNTIME_BASE_GB, RUNTIME_WEIGHT_FRACTION, ModelPlan, Plan, plan_models
from confgen.plan.gpus import Gpu, GpuProfile, get_gpu, load_gpus
from confgen.plan.spec import ModelSpec, fixed_bytes_per_seq, kv_bytes_per_token, spec_from, specs_from
from confgen.plan.suggest import suggestions

__all__ = [
    "RUNTIME_BASE_GB",
    "RUNTIME_WEIGHT_FRACTION",
    "Gpu",
    "GpuProfile",
    "ModelPlan",
    "ModelSpec",
    "Plan",
    "fixed_bytes_per_seq",
    "get_gpu",
    "kv_bytes_per_token",
    "load_gpus",
    "plan",
    "plan_selection",
    "spec_from",
    "specs_from",
]


def plan(specs: Sequence[ModelSpec], gpu: Gpu, context: int | None = None, concurrency: int | None = None, *,
         others: Mapping[str, Gpu] | None = None, fill: bool = True) -> Plan:
    """Plan `specs` on one device of `gpu`; when it does not fit, say what would (`others`: GPUs to try)."""
    contexts = [context or s.default_context for s in specs]
    concurrencies = [concurrency or s.default_concurrency for s in specs]
    result = plan_models(specs, gpu, contexts, concurrencies, fill)
    if result.fits:
        return result
    return replace(result, suggestions=tuple(suggestions(specs, gpu, contexts, concurrencies, others or {})))


def plan_selection(selection: Selection, gpu_name: str, context: int | None = None,
                   concurrency: int | None = None, *, fill: bool = True) -> Plan:
    """Plan the selected models on the named GPU profile (shipped or the project's gpus/<name>.yml)."""
    gpu, gpus = get_gpu(selection.project, gpu_name)
    specs = specs_from(selection.models)
    return plan(specs, gpu, context, concurrency, others={n: g for n, g in gpus.items() if n != gpu_name}, fill=fill)
