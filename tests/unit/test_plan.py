"""confgen.plan against the figures of reference/model-catalog.md (§1 memory column, §5 KV arithmetic).

Tolerance for the §1 totals: 5% or 0.5 GB, whichever is larger (the reference itself allows
"about 2-6 GB" of runtime on top of weights and KV; docs/planner.md lists the error per model).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from confgen.catalog import select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.plan import ModelSpec, Plan, get_gpu, kv_bytes_per_token, plan, plan_selection, spec_from
from tests.conftest import REPO

CATALOG = Project(REPO)
KIB = 1024


def catalog_plan(*names: str, gpu: str = "dgx-spark", context: int | None = 32768,
                 concurrency: int | None = 1, fill: bool = True) -> Plan:
    return plan_selection(select(CATALOG, list(names), environ={}), gpu, context, concurrency, fill=fill)


def spec(name: str) -> ModelSpec:
    return spec_from(select(CATALOG, [name], environ={}).models[0])


# §5: KV per token, fp8 and bf16 (exact: the same arithmetic on the same published configs).
@pytest.mark.parametrize(("name", "fp8_bytes"), [
    ("glm47-flash", 47 * 576),  # 26.4 KiB
    ("step-3.5-flash", 24 * KIB),
    ("qwen3-next-coder", 12 * KIB),
    ("gpt-oss-20b", 12 * KIB),
    ("gpt-oss-120b", 18 * KIB),
    ("qwen3-coder-30b", 48 * KIB),
    ("qwen2.5-1.5b-instruct", 14 * KIB),
    ("text2sql-1.5b", 14 * KIB),
    ("mistral-small-3.1-24b", 80 * KIB),
    ("prem-1b-sql", 96 * KIB),
])
def test_kv_bytes_per_token_matches_reference_section_5(name: str, fp8_bytes: int) -> None:
    arch = spec(name).arch
    assert kv_bytes_per_token(arch, 1) == fp8_bytes
    assert kv_bytes_per_token(arch, 2) == 2 * fp8_bytes


def test_glm_kv_per_token_is_the_public_54_kb() -> None:
    assert round(kv_bytes_per_token(spec("glm47-flash").arch, 2) / KIB, 1) == 52.9


def test_tiny_cpu_kv_per_token_from_its_build_script() -> None:
    # 2 layers x 2 (K, V) x 2 KV heads x head_dim 64 x 2 bytes (bf16, --kv-cache-dtype auto)
    tiny = spec("tiny-cpu")
    assert (tiny.kv_cache_dtype, tiny.kv_bytes) == ("auto", 2)
    assert kv_bytes_per_token(tiny.arch, tiny.kv_bytes) == 1024


# §1: "est. memory @32K ctx, 1 seq" (prem-1b-sql at its 16K maximum).
@pytest.mark.parametrize(("name", "context", "reference_gb"), [
    ("glm47-flash", 32768, 67),
    ("gpt-oss-20b", 32768, 17),
    ("gpt-oss-120b", 32768, 70),
    ("qwen3-coder-30b", 32768, 67),
    ("qwen3-next-coder", 32768, 86),
    ("qwen2.5-1.5b-instruct", 32768, 6),
    ("text2sql-1.5b", 32768, 6),
    ("mistral-small-3.1-24b", 32768, 55),
    ("prem-1b-sql", 16384, 6),
])
def test_totals_match_reference_section_1(name: str, context: int, reference_gb: float) -> None:
    total = catalog_plan(name, context=context).models[0].total_gb
    assert abs(total - reference_gb) <= max(0.05 * reference_gb, 0.5), f"{name}: {total:.2f} vs {reference_gb}"


def test_glm47_flash_about_67_gb_at_32k_one_sequence_with_bf16_kv() -> None:
    (glm,) = catalog_plan("glm47-flash").models
    assert glm.kv_cache_dtype == "auto"
    assert glm.kv_element_bytes == 2  # MLA on the Spark with vLLM 0.16: bf16 KV only
    assert glm.kv_gb == pytest.approx(1.774, abs=0.01)  # §5: 1.77 GB
    assert 64 <= glm.total_gb <= 70


def test_step_3_5_flash_fits_no_single_spark() -> None:
    result = catalog_plan("step-3.5-flash")
    assert not result.fits
    assert result.reasons[0].startswith("step-3.5-flash runs over 2 GPUs (--tensor-parallel-size 2)")
    one_gpu = replace(spec("step-3.5-flash"), tensor_parallel=1)
    gpu, _ = get_gpu(CATALOG, "dgx-spark")
    alone = plan([one_gpu], gpu, 32768, 1)
    assert not alone.fits
    assert alone.short_gb > 90  # ~200 GB of FP8 weights on a 108.8 GB budget
    bf16 = plan([one_gpu.with_weights("stepfun-ai/Step-3.5-Flash", 394)], gpu, 1024, 1)
    assert not bf16.fits


def test_gpt_oss_120b_and_20b_fit_one_spark_at_32k() -> None:
    result = catalog_plan("gpt-oss-120b", "gpt-oss-20b")
    assert result.fits
    assert result.total_gb == pytest.approx(87, abs=2)
    assert result.share_sum <= 0.85
    assert all(m.gpu_memory_utilization >= m.needed_share for m in result.models)


def test_qwen3_coder_next_fits_only_as_fp8() -> None:
    fp8 = catalog_plan("qwen3-next-coder")
    assert fp8.fits
    assert fp8.models[0].hf_id == "Qwen/Qwen3-Coder-Next-FP8"
    gpu, gpus = get_gpu(CATALOG, "dgx-spark")
    bf16_spec = spec("qwen3-next-coder").with_weights("Qwen/Qwen3-Coder-Next", 160)
    bf16 = plan([bf16_spec], gpu, 32768, 1, others=gpus)
    assert not bf16.fits
    assert bf16.short_gb > 50
    assert not any(s.startswith("a bigger GPU") for s in bf16.suggestions)  # 160 GB: no single shipped GPU


def test_a_model_too_big_in_bf16_is_told_to_use_the_fp8_repo() -> None:
    result = catalog_plan("qwen3-coder-30b", "gpt-oss-120b")
    assert not result.fits
    assert any(s.startswith("use the FP8 repo Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8 for qwen3-coder-30b")
               for s in result.suggestions)
    assert any(s.startswith("one model fewer: without gpt-oss-120b") for s in result.suggestions)


def test_shares_fill_the_ceiling_without_passing_it() -> None:
    filled = catalog_plan("gpt-oss-120b", "gpt-oss-20b", "qwen2.5-1.5b-instruct")
    bare = catalog_plan("gpt-oss-120b", "gpt-oss-20b", "qwen2.5-1.5b-instruct", fill=False)
    assert filled.fits
    assert bare.fits
    assert [m.gpu_memory_utilization for m in bare.models] == [m.needed_share for m in bare.models]
    assert bare.share_sum < filled.share_sum <= 0.85
    assert filled.shares == {m.name: m.gpu_memory_utilization for m in filled.models}
    assert all(m.full_length_seqs >= 1 for m in filled.models)


def test_shorter_context_and_fewer_sequences_are_suggested_and_fit() -> None:
    result = catalog_plan("glm47-flash", gpu="h100-80gb", context=131072, concurrency=2)
    assert not result.fits
    context = next(s for s in result.suggestions if s.startswith("a shorter context"))
    tokens = int(context.split("--context ")[1].split("K")[0]) * 1024
    assert catalog_plan("glm47-flash", gpu="h100-80gb", context=tokens, concurrency=2).fits
    assert not catalog_plan("glm47-flash", gpu="h100-80gb", context=tokens + 1024, concurrency=2).fits
    assert any(s.startswith("a bigger GPU: --gpu dgx-spark") for s in result.suggestions)


def test_fp8_kv_is_suggested_where_it_is_allowed() -> None:
    result = catalog_plan("mistral-small-3.1-24b", "gpt-oss-20b", gpu="h100-80gb", context=32768, concurrency=4)
    assert not result.fits  # fp8 already: nothing to halve
    assert not any("--kv-cache-dtype fp8" in s for s in result.suggestions)
    gpu, _ = get_gpu(CATALOG, "h100-80gb")
    bf16_mistral = spec("mistral-small-3.1-24b").with_kv_dtype("bfloat16")
    needs_fp8 = plan([bf16_mistral], gpu, 32768, 4)
    assert not needs_fp8.fits
    assert any(s.startswith("--kv-cache-dtype fp8 for mistral-small-3.1-24b") for s in needs_fp8.suggestions)


def test_mla_fp8_kv_is_a_warning_on_the_spark_only() -> None:
    glm_fp8 = spec("glm47-flash").with_kv_dtype("fp8")
    spark, _ = get_gpu(CATALOG, "dgx-spark")
    h100, _ = get_gpu(CATALOG, "h100-80gb")
    assert plan([glm_fp8], spark, 32768, 1).models[0].warnings == (
        "glm47-flash: an fp8 KV cache on an MLA model does not start on dgx-spark (no valid attention backend); "
        "use the bf16 KV cache (--kv-cache-dtype auto)",
    )
    assert plan([glm_fp8], h100, 32768, 1).models[0].warnings == ()


def test_context_past_native_is_a_warning() -> None:
    (prem,) = catalog_plan("prem-1b-sql", context=32768).models
    assert prem.warnings == ("prem-1b-sql: 32768 tokens is past its native context 16384: vLLM refuses "
                             "--max-model-len 32768 unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set",)


def test_defaults_come_from_the_command() -> None:
    result = catalog_plan("prem-1b-sql", context=None, concurrency=None)
    assert (result.models[0].context, result.models[0].concurrency) == (16384, 1)


def test_the_files_own_gpu_memory_utilization_is_checked() -> None:
    too_small = replace(spec("qwen3-next-coder"), gpu_memory_utilization=0.5)
    gpu, _ = get_gpu(CATALOG, "dgx-spark")
    assert plan([too_small], gpu, 32768, 1).models[0].warnings == (
        "models/qwen3-next-coder.yml sets --gpu-memory-utilization 0.5, below the 0.67 this plan needs: "
        "use the plan's value",
    )


def test_deltanet_state_counts_per_sequence() -> None:
    gpu, _ = get_gpu(CATALOG, "dgx-spark")
    qcn = spec("qwen3-next-coder")
    one, eight = plan([qcn], gpu, 1024, 1).models[0], plan([qcn], gpu, 1024, 8).models[0]
    assert eight.kv_gb - 8 * one.kv_gb == pytest.approx(0, abs=1e-9)
    assert one.kv_gb == pytest.approx((12 * KIB * 1024 + 80e6) / 1e9)


def test_unknown_gpu_is_a_usage_error() -> None:
    with pytest.raises(ConfgenError) as caught:
        catalog_plan("tiny-cpu", gpu="tpu")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("--gpu: unknown GPU profile 'tpu' (known: a100-80gb, dgx-spark, h100-80gb")


def test_every_shipped_model_file_has_an_arch_section() -> None:
    from confgen.catalog import load_all

    selection, problems = load_all(CATALOG, environ={})
    assert problems == []
    assert len(selection.models) == 12
    assert [m.name for m in selection.models if m.arch is None] == []
