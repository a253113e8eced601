"""confgen plan (exact output, --json, --list-gpus, user profiles, exit codes) and the planner's part of
confgen check (arch sections against the commands, GPU profile files).

Exit codes of plan: 0 fits, 1 does not fit (or invalid input), 2 usage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result

from confgen.load import Project

RunCli = Callable[..., Result]
WriteModel = Callable[[str, Any], Path]

TINY_ON_4090 = """\
rtx-4090-24gb: NVIDIA GeForce RTX 4090, 24 GB GDDR6X
  vLLM may take 21.6 GB: ceiling 0.90 of 24 GB device memory

MODEL     CONTEXT  SEQS  KV DTYPE    WEIGHTS  KV      OVERHEAD  TOTAL   SHARE
tiny-cpu  512      1     auto (2 B)  5.0 MB   0.5 MB  2.0 GB    2.0 GB  0.09
all                                                             2.0 GB  0.09 of 0.90

vLLM flags (the spare share is KV room):
  tiny-cpu  --gpu-memory-utilization 0.90 --max-model-len 512 --max-num-seqs 1   \
# KV room 19,135,546 tokens = 37374 x 512

verdict: fits: 2.0 of 21.6 GB (19.6 GB spare)
"""


def write_gpu(project: Project, name: str, text: str) -> Path:
    folder = project.root / "gpus"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_plan_prints_the_table_flags_and_verdict(run_cli: RunCli) -> None:
    result = run_cli("plan", "--gpu", "rtx-4090-24gb", "--model", "tiny-cpu")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == TINY_ON_4090


def test_plan_json(run_cli: RunCli) -> None:
    result = run_cli("plan", "--gpu", "h100-80gb", "--model", "tiny-cpu", "--context", "1k", "--concurrency", "4",
                     "--no-fill", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["fits"] is True
    assert data["gpu"] == {"name": "h100-80gb", "description": "NVIDIA H100, 80 GB HBM", "memory_gb": 80.0,
                           "unified": False, "ceiling": 0.9, "budget_gb": 72.0,
                           "source": "confgen/gpus/h100-80gb.yml"}
    (model,) = data["models"]
    assert model["kv_bytes_per_token"] == 1024
    assert model["kv_gb"] == round(1024 * 1024 * 4 / 1e9, 3)
    assert model["vllm_args"] == ["--gpu-memory-utilization", "0.03", "--max-model-len", "1024",
                                  "--max-num-seqs", "4"]
    assert model["gpu_memory_utilization"] == model["needed_share"] == 0.03


def test_plan_that_does_not_fit_exits_1_with_suggestions(run_cli: RunCli, project: Project) -> None:
    write_gpu(project, "toy", "description: a toy GPU\nmemory_gb: 2\nceiling: 0.9\n")
    result = run_cli("plan", "--gpu", "toy", "--model", "tiny-cpu")
    assert result.exit_code == 1
    assert result.stdout.endswith(
        "verdict: does not fit by 0.2 GB\n"
        "  - needs 2.0 GB, toy has 1.8 GB for vLLM (0.90 of 2 GB): short by 0.2 GB\n"
        "what would fit:\n"
        "  - a bigger GPU: --gpu rtx-4090-24gb (NVIDIA GeForce RTX 4090, 24 GB GDDR6X; 21.6 GB for vLLM)\n"
    )


def test_list_gpus_includes_the_users_own(run_cli: RunCli, project: Project) -> None:
    write_gpu(project, "my-box", "description: two A6000s, planned as one\nmemory_gb: 48\nceiling: 0.8\n")
    result = run_cli("plan", "--list-gpus")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MEMORY", "CEILING", "FOR", "VLLM", "FROM", "DESCRIPTION"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["rtx-4090-24gb", "my-box", "l40s-48gb", "rtx-6000-ada-48gb", "a100-80gb", "h100-80gb",
                     "dgx-spark", "h200-141gb"]
    assert "38.4 GB   gpus/my-box.yml" in result.stdout


def test_a_broken_gpu_profile_names_the_file_and_key(run_cli: RunCli, project: Project) -> None:
    write_gpu(project, "bad", "description: x\nmemory: 48\nceiling: 1.5\n")
    result = run_cli("plan", "--list-gpus")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: gpus/bad.yml: memory_gb: Field required\n"
        "error: gpus/bad.yml: ceiling: Input should be less than or equal to 1\n"
        "error: gpus/bad.yml: memory: unknown key (allowed: ceiling, description, fp8_mla_kv, memory_gb, "
        "notes, os_reserve_gb, swap, swap_reason, unified)\n"
    )
    check = run_cli("check", "--no-vllm")
    assert check.exit_code == 1
    assert "error: gpus/bad.yml: memory_gb: Field required\n" in check.stderr


def test_usage_errors_exit_2(run_cli: RunCli) -> None:
    no_gpu = run_cli("plan", "--model", "tiny-cpu")
    assert (no_gpu.exit_code, no_gpu.stderr) == (
        2, "error: --gpu: no GPU profile given (name one, e.g. --gpu dgx-spark; confgen plan --list-gpus lists them)\n")
    no_model = run_cli("plan", "--gpu", "dgx-spark")
    assert no_model.exit_code == 2
    bad_context = run_cli("plan", "--gpu", "dgx-spark", "--model", "tiny-cpu", "--context", "lots")
    assert bad_context.exit_code == 2
    assert "Invalid value for '--context': expected an integer or a size like 128K, got 'lots'" in bad_context.stderr
    unknown = run_cli("plan", "--gpu", "tpu-v5", "--model", "tiny-cpu")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: --gpu: unknown GPU profile 'tpu-v5' (known: a100-80gb, dgx-spark")


def test_a_model_without_arch_cannot_be_planned(run_cli: RunCli, write_model: WriteModel,
                                                tiny_doc: dict[str, Any]) -> None:
    del tiny_doc["arch"]
    tiny_doc["serve"]["port"] = 8001
    write_model("bare", tiny_doc)
    result = run_cli("plan", "--gpu", "dgx-spark", "--model", "bare")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: models/bare.yml: arch: missing: the planner cannot size this model's KV cache (add the arch "
        "section (layers, layers_with_kv, kv_heads, head_dim or mla_latent_dim, native_context); "
        "see docs/planner.md)\n"
    )
    check = run_cli("check", "--no-vllm")
    assert check.exit_code == 0
    assert ("note: no arch section in models/bare.yml: `confgen plan` cannot size them (docs/planner.md)\n"
            in check.stdout)


def test_check_flags_a_max_model_len_past_the_native_context(run_cli: RunCli, write_model: WriteModel,
                                                             tiny_doc: dict[str, Any]) -> None:
    tiny_doc["command"] = "vllm serve .local/models/tiny-cpu --max-model-len 4096"
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: models/tiny-cpu.yml: command: --max-model-len: 4096 is above the model's native context 2048 "
        "(arch.native_context): vLLM refuses it at start-up (lower it to at most 2048, or set env "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN: \"1\" in models/tiny-cpu.yml if you mean it)\n"
    )
    tiny_doc["env"]["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
    write_model("tiny-cpu", tiny_doc)
    assert run_cli("check", "--no-vllm").exit_code == 0


def test_check_flags_a_tensor_parallel_size_that_cannot_shard(run_cli: RunCli, write_model: WriteModel,
                                                              tiny_doc: dict[str, Any]) -> None:
    tiny_doc["arch"]["kv_heads"] = 6
    tiny_doc["command"] = "vllm serve .local/models/tiny-cpu --tensor-parallel-size 4"
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert ("error: models/tiny-cpu.yml: command: --tensor-parallel-size: 4 does not divide the 6 KV heads "
            "(arch.kv_heads), nor do they divide it: vLLM cannot shard the attention" in result.stderr)


def test_check_notes_fp8_kv_on_an_mla_model(run_cli: RunCli, write_model: WriteModel,
                                            tiny_doc: dict[str, Any]) -> None:
    tiny_doc["arch"] = {"layers": 2, "layers_with_kv": 2, "mla_latent_dim": 576, "native_context": 2048}
    tiny_doc["command"] = "vllm serve .local/models/tiny-cpu --kv-cache-dtype fp8"
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 0
    assert ("note: models/tiny-cpu.yml: --kv-cache-dtype fp8 on an MLA model does not start on dgx-spark "
            "(vLLM 0.16: no valid attention backend)\n" in result.stdout)


def test_arch_section_is_validated(run_cli: RunCli, write_model: WriteModel, tiny_doc: dict[str, Any]) -> None:
    tiny_doc["arch"]["mla_latent_dim"] = 576
    tiny_doc["arch"]["sliding_windw"] = {"layers": 1, "window": 128}
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:1] == [
        "error: models/tiny-cpu.yml: arch.sliding_windw: unknown key (did you mean 'sliding_window'? allowed: "
        "dtype, head_dim, kv_heads, layers, layers_with_kv, mla_latent_dim, native_context, sliding_window, "
        "state_mb_per_seq, weight_variants)",
    ]
    del tiny_doc["arch"]["sliding_windw"]
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.stderr.splitlines()[0] == (
        "error: models/tiny-cpu.yml: arch: give either mla_latent_dim (MLA) or kv_heads and head_dim, not both")
    tiny_doc["arch"] = {"layers": 2, "layers_with_kv": 2, "kv_heads": 2, "head_dim": 64, "native_context": "2k",
                        "sliding_window": {"layers": 1, "window": 64}}
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.stderr.splitlines()[0] == (
        "error: models/tiny-cpu.yml: arch: layers_with_kv (2) plus sliding_window.layers (1) exceed layers (2)")
