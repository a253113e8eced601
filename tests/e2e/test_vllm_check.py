"""The vLLM argument check against the real CPU build of vLLM in .venv-vllm.

Model files are written into a temporary project and loaded through the real loader, so the argv
the probe sees is the one the launcher would exec. One probe run (~5 s, mostly importing vLLM)
checks all of them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.vllm_check import PROBE, PYTHON_ENV, VllmReport, check_commands

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

needs_vllm = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason=f"{VLLM_PYTHON} is missing: run `confgen install` to install the CPU build of vLLM",
)

MODEL_FILE = """\
info:
  description: {name}, written by test_vllm_check
  params: 1.4M
  weights_gb: 0.005
  gpu_memory_gb: 0
  device: cpu

serve:
  port: {port}

command: |
  vllm serve .local/models/tiny-cpu \\
    --max-model-len 512 \\
    --dtype bfloat16 \\
    --enforce-eager {flags}

env:
  VLLM_CPU_KVCACHE_SPACE: "1"

litellm:
  max_tokens: 64
"""

# name -> extra flags appended to tiny-cpu's command
CASES = {
    "tiny-cpu": "",
    "kv-fp9": "--kv-cache-dtype fp9",
    "tool-typo": "--enable-auto-tool-choice --tool-call-parser qwen3_code",
    "unknown-flag": "--no-such-flag",
    "mm-key-value": "--limit_mm_per_prompt image=10",
    "mm-json": """--limit-mm-per-prompt '{"image":10}'""",
    "spark-only": "--swap-space 16 --disable-log-requests",
}


def make_project(root: Path, cases: dict[str, str]) -> Project:
    (root / "models").mkdir(parents=True)
    shutil.copy(REPO / "vars.env", root / "vars.env")
    shutil.copy(REPO / "litellm_config.template.yaml", root / "litellm_config.template.yaml")
    for port, (name, flags) in enumerate(cases.items(), start=8100):
        text = MODEL_FILE.format(name=name, port=port, flags=flags)
        (root / "models" / f"{name}.yml").write_text(text, encoding="utf-8")
    return Project(root)


def run_check(project: Project, names: list[str], python: str | None) -> VllmReport:
    models = select(project, names, environ={}).models
    with pytest.MonkeyPatch.context() as mp:
        if python is None:
            mp.delenv(PYTHON_ENV, raising=False)
        else:
            mp.setenv(PYTHON_ENV, python)
        return check_commands(project, models)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> VllmReport:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} is missing: run `confgen install`")
    project = make_project(tmp_path_factory.mktemp("vllm-check"), CASES)
    return run_check(project, list(CASES), str(VLLM_PYTHON))


def problems_of(report: VllmReport, name: str) -> list[str]:
    return [str(p) for p in report.problems if p.where == f"models/{name}.yml: command"]


@needs_vllm
def test_summary_names_the_vllm_version_and_counts(report: VllmReport) -> None:
    assert report.summary.startswith("vLLM 0.32"), report.summary
    assert f"checked {len(CASES)} commands" in report.summary
    assert "5 rejected" in report.summary


@needs_vllm
@pytest.mark.parametrize("name", ["tiny-cpu", "mm-json"])
def test_valid_commands_pass(report: VllmReport, name: str) -> None:
    assert problems_of(report, name) == []


@needs_vllm
def test_bad_kv_cache_dtype_lists_the_choices(report: VllmReport) -> None:
    [problem] = problems_of(report, "kv-fp9")
    assert "--kv-cache-dtype" in problem
    assert "'fp9'" in problem
    for choice in ("auto", "bfloat16", "fp8", "fp8_e4m3"):
        assert choice in problem


@needs_vllm
def test_tool_parser_typo_suggests_the_right_name(report: VllmReport) -> None:
    [problem] = problems_of(report, "tool-typo")
    assert "--tool-call-parser" in problem
    assert "'qwen3_code'" in problem
    assert "did you mean 'qwen3_coder'" in problem


@needs_vllm
def test_unknown_flag_is_rejected(report: VllmReport) -> None:
    [problem] = problems_of(report, "unknown-flag")
    assert "--no-such-flag: unrecognized flag" in problem


@needs_vllm
def test_key_value_multimodal_limit_needs_json(report: VllmReport) -> None:
    [problem] = problems_of(report, "mm-key-value")
    assert "--limit-mm-per-prompt" in problem
    assert "not valid JSON" in problem
    assert """'{"image":10}'""" in problem


@needs_vllm
def test_flags_of_older_vllm_are_reported_with_the_version_used(report: VllmReport) -> None:
    problems = problems_of(report, "spark-only")
    assert len(problems) == 2
    for flag, problem in zip(("--swap-space", "--disable-log-requests"), problems, strict=True):
        assert problem.startswith(f"models/spark-only.yml: command: {flag}: unrecognized flag")
        assert "vLLM 0.16" in problem
        assert "this check used vLLM 0.32" in problem


def test_skipped_without_vllm(tmp_path: Path) -> None:
    """No $CONFGEN_VLLM_PYTHON, no .venv-vllm in the project, no vllm in this interpreter."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this interpreter has vLLM, so the check would run with it")
    project = make_project(tmp_path / "proj", {"tiny-cpu": ""})
    report = run_check(project, ["tiny-cpu"], None)
    assert report.problems == []
    assert report.summary.startswith("vLLM argument check skipped")
    assert PYTHON_ENV in report.summary


def test_a_python_without_vllm_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", {"tiny-cpu": ""})
    report = run_check(project, ["tiny-cpu"], sys.executable)
    [problem] = report.problems
    assert problem.where == "vLLM check"
    assert "No module named 'vllm'" in problem.what


@needs_vllm
def test_probe_speaks_json_and_never_crashes() -> None:
    """The probe itself: one JSON answer on stdout, whatever the argv holds."""
    request = {"models": {
        "ok": ["m", "--max-model-len", "32K", "--attention-backend", "auto"],
        "help": ["m", "--help"],
        "keyerror": ["m", "--compilation-config", '{"cudagraph_mode": "nope"}'],
        "many": ["m", "--kv-cache-dtype", "fp16", "-tp", "x", "--load-format", "gguf",
                 "--attention-backend", "flashinf", "--reasoning-parser", "qwen3x"],
    }}
    proc = subprocess.run([str(VLLM_PYTHON), str(PROBE)], input=json.dumps(request),
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    results = answer["results"]
    assert answer["vllm_version"].startswith("0.32")
    assert results["ok"] == []
    assert [r["flag"] for r in results["help"]] == ["--help"]
    assert [r["flag"] for r in results["keyerror"]] == ["--compilation-config"]
    assert sorted(r["flag"] for r in results["many"]) == [
        "--attention-backend", "--kv-cache-dtype", "--load-format", "--reasoning-parser",
        "--tensor-parallel-size",
    ]
    backend = next(r for r in results["many"] if r["flag"] == "--attention-backend")
    assert "FLASHINFER" in backend["fix"]


@needs_vllm
def test_probe_rejects_bad_input_with_json() -> None:
    proc = subprocess.run([str(VLLM_PYTHON), "-m", "confgen.vllm_probe"], input="[1, 2]",
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert proc.returncode == 1
    assert "expected" in json.loads(proc.stdout)["error"]
