"""Shared fixtures: a minimal project in tmp_path (vars.env + template from the repo, own model files)."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from confgen.cli import cli
from confgen.load import Project
from confgen.schema import SETTING_NAMES

REPO = Path(__file__).resolve().parents[1]
# LiteLLM fetches its model cost map from GitHub when imported, unless told to use the copy it ships;
# tests that import it (confgen.gateway.requestmodel) talk to loopback only.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# A copy of models/tiny-cpu.yml, kept here so the tests do not move when the catalog does.
TINY_CPU = """\
info:
  description: Tiny random-weight Llama for machines without a GPU and for end-to-end tests
  params: 1.4M (2 layers, hidden 256)
  weights_gb: 0.005
  gpu_memory_gb: 0
  device: cpu
  notes:
    - VLLM_CPU_KVCACHE_SPACE is the KV cache of the CPU build, in GiB.

arch:
  layers: 2
  layers_with_kv: 2
  kv_heads: 2
  head_dim: 64
  native_context: 2048

serve:
  port: 8000

command: |
  vllm serve .local/models/tiny-cpu \\
    --max-model-len 512 \\
    --dtype bfloat16 \\
    --enforce-eager

env:
  VLLM_CPU_KVCACHE_SPACE: "1"
  HF_HUB_OFFLINE: "1"

litellm:
  max_tokens: 64
  timeout: 120
"""
TINY_DOC: dict[str, Any] = yaml.safe_load(TINY_CPU)

WriteModel = Callable[[str, "str | dict[str, Any]"], Path]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """tmp_path/proj with the repo's vars.env and template and one model, models/tiny-cpu.yml.

    Settings in the process environment override vars.env, so they are removed for the test.
    """
    for name in (*SETTING_NAMES, "CONFGEN_ROOT"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    shutil.copy(REPO / "vars.env", root / "vars.env")
    shutil.copy(REPO / "litellm_config.template.yaml", root / "litellm_config.template.yaml")
    (root / "models" / "tiny-cpu.yml").write_text(TINY_CPU, encoding="utf-8")
    return Project(root)


@pytest.fixture
def tiny_doc() -> dict[str, Any]:
    """A fresh, valid model document to change and write with write_model."""
    return copy.deepcopy(TINY_DOC)


@pytest.fixture
def write_model(project: Project) -> WriteModel:
    """write_model(name, text or document) -> the path of models/<name>.yml in `project`."""

    def write(name: str, content: str | dict[str, Any]) -> Path:
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path = project.models_dir / f"{name}.yml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_vars(project: Project) -> Callable[[str], Path]:
    """write_vars(text) replaces the project's vars.env."""

    def write(text: str) -> Path:
        project.vars_env.write_text(text, encoding="utf-8")
        return project.vars_env

    return write


@pytest.fixture
def write_secret(project: Project) -> Callable[[str, str], Path]:
    def write(name: str, value: str) -> Path:
        project.secrets_dir.mkdir(exist_ok=True)
        path = project.secrets_dir / name
        path.write_text(value + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_cli(project: Project) -> Callable[..., Result]:
    """run_cli(*args, env=...) invokes `confgen --root <project> *args`.

    With click >= 8.2 result.stdout and result.stderr are apart; result.output has both.
    """

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner(env=env).invoke(cli, ["--root", str(project.root), *args])

    return run
