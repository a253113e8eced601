"""What `confgen check` asks of the planner's inputs: arch sections that agree with the commands, GPU profiles."""

from __future__ import annotations

from confgen.catalog import Selection
from confgen.errors import ConfgenError, Problem
from confgen.merge import ResolvedModel
from confgen.plan.gpus import load_gpus
from confgen.plan.spec import LONG_CONTEXT_ENV, allows_long_context, spec_from


def plan_checks(selection: Selection) -> tuple[list[Problem], list[str]]:
    """(problems, notes): commands that contradict their arch section, broken GPU profile files."""
    gpus, problems = load_gpus(selection.project)
    notes: list[str] = []
    no_mla_fp8 = sorted(name for name, gpu in gpus.items() if not gpu.profile.fp8_mla_kv)
    missing = [m.file for m in selection.models if m.arch is None]
    if missing:
        notes.append(f"no arch section in {', '.join(missing)}: `confgen plan` cannot size them (docs/planner.md)")
    for model in selection.models:
        if model.arch is not None:
            problems += _contradictions(model)
            notes += _notes(model, no_mla_fp8)
    return problems, notes


def _contradictions(model: ResolvedModel) -> list[Problem]:
    assert model.arch is not None  # noqa: S101 - the caller checked
    arch, found = model.arch, []
    where = f"{model.file}: command"
    length = model.max_model_len
    if length is not None and length > arch.native_context and not allows_long_context(model.env):
        found.append(Problem(f"{where}: --max-model-len",
                             f"{length} is above the model's native context {arch.native_context} "
                             "(arch.native_context): vLLM refuses it at start-up",
                             f"lower it to at most {arch.native_context}, or set env "
                             f"{LONG_CONTEXT_ENV}: \"1\" in {model.file} if you mean it"))
    try:
        tp = spec_from(model).tensor_parallel
    except ConfgenError:
        return found  # a KV dtype the planner cannot size: a note, see _notes
    heads = arch.kv_heads
    if heads is not None and heads % tp and tp % heads:
        found.append(Problem(f"{where}: --tensor-parallel-size",
                             f"{tp} does not divide the {heads} KV heads (arch.kv_heads), nor do they divide it: "
                             "vLLM cannot shard the attention",
                             f"use a tensor-parallel size that divides {heads} or is a multiple of it"))
    return found


def _notes(model: ResolvedModel, no_mla_fp8: list[str]) -> list[str]:
    assert model.arch is not None  # noqa: S101 - the caller checked
    try:
        spec = spec_from(model)
    except ConfgenError as exc:
        return [f"{p} (confgen plan cannot size this model)" for p in exc.problems]
    if spec.is_mla and spec.kv_cache_dtype.startswith("fp8") and no_mla_fp8:
        return [f"{model.file}: --kv-cache-dtype {spec.kv_cache_dtype} on an MLA model does not start on "
                f"{', '.join(no_mla_fp8)} (vLLM 0.16: no valid attention backend)"]
    return []
