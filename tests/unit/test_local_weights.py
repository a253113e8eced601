"""confgen.runtime.local_weights: a model under .local/models/ built by the script its file names, once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from confgen.catalog import select
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project
from confgen.runtime import local_weights
from tests.conftest import WriteModel

# A stand-in builder: writes config.json into --out, counts its runs, prints progress.
BUILDER = """\
import argparse, pathlib
p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--force", action="store_true")
a = p.parse_args(); out = pathlib.Path(a.out); out.mkdir(parents=True, exist_ok=True)
runs = out / "runs"; runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
print("[1/1] writing", flush=True); (out / "config.json").write_text("{}")
"""


@pytest.fixture
def local(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]) -> Project:
    """The project's tiny-cpu, built by scripts/build_x.py (the stand-in)."""
    (project.root / "scripts").mkdir()
    (project.root / "scripts" / "build_x.py").write_text(BUILDER, encoding="utf-8")
    tiny_doc["info"]["build"] = "scripts/build_x.py"
    write_model("tiny-cpu", tiny_doc)
    return project


def ensure(project: Project, log: Path) -> None:
    model = select(project, ["tiny-cpu"], environ={}).models[0]
    local_weights.ensure(project, model, Path(sys.executable), log)


def test_built_once_with_its_output_shown(local: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure(local, tmp_path / "build.log")
    ensure(local, tmp_path / "build.log")
    target = local.root / ".local" / "models" / "tiny-cpu"
    assert (target / "runs").read_text() == "1"
    assert capsys.readouterr().out == (f"building the local model .local/models/tiny-cpu with scripts/build_x.py "
                                       f"(log: {tmp_path / 'build.log'})\n[1/1] writing\n")
    assert (tmp_path / "build.log").read_text() == "[1/1] writing\n"


def test_rebuilt_when_its_script_changes(local: Project, tmp_path: Path) -> None:
    ensure(local, tmp_path / "build.log")
    script = local.root / "scripts" / "build_x.py"
    script.write_text(BUILDER + "# changed\n", encoding="utf-8")
    ensure(local, tmp_path / "build.log")
    assert (local.root / ".local" / "models" / "tiny-cpu" / "runs").read_text() == "2"


def test_weights_of_another_build_are_rebuilt(local: Project, tmp_path: Path) -> None:
    target = local.root / ".local" / "models" / "tiny-cpu"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # built before builds were stamped
    ensure(local, tmp_path / "build.log")
    assert (target / "runs").read_text() == "1"


def test_a_failed_build_says_where_its_log_is(local: Project, tmp_path: Path) -> None:
    (local.root / "scripts" / "build_x.py").write_text("raise SystemExit('no disk')\n", encoding="utf-8")
    with pytest.raises(LaunchError) as caught:
        ensure(local, tmp_path / "build.log")
    assert str(caught.value) == f"build of .local/models/tiny-cpu: failed (see {tmp_path / 'build.log'})"
    assert "no disk" in (tmp_path / "build.log").read_text()
    assert not (local.root / ".local" / "models" / "tiny-cpu" / local_weights.STAMP).exists()


def test_a_local_model_without_a_builder_is_refused(project: Project, tmp_path: Path) -> None:
    with pytest.raises(ConfgenError) as caught:
        ensure(project, tmp_path / "build.log")
    assert str(caught.value) == ("models/tiny-cpu.yml: info.build: .local/models/tiny-cpu is built on this "
                                 "machine, but no script builds it (name its builder, e.g. "
                                 "`build: scripts/build_tiny_model.py`)")


def test_a_missing_builder_is_refused(local: Project, tmp_path: Path) -> None:
    (local.root / "scripts" / "build_x.py").unlink()
    with pytest.raises(ConfgenError) as caught:
        ensure(local, tmp_path / "build.log")
    assert str(caught.value) == ("models/tiny-cpu.yml: info.build: scripts/build_x.py does not exist (name a "
                                 "script under scripts/ that builds the weights)")


def test_hub_models_are_left_alone(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any],
                                   tmp_path: Path) -> None:
    tiny_doc["command"] = "vllm serve Qwen/Qwen2.5-1.5B-Instruct --max-model-len 512"
    write_model("tiny-cpu", tiny_doc)
    ensure(project, tmp_path / "build.log")
    assert not (tmp_path / "build.log").exists()


def test_the_shipped_local_models_name_their_builders() -> None:
    repo = Project(Path(__file__).resolve().parents[2])
    for name in ("tiny-cpu", "smollm2-135m"):
        model = select(repo, [name], environ={}).models[0]
        assert local_weights.is_local(model)
        assert local_weights.build_script(repo, model).is_file()
