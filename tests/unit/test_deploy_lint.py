"""Lint of the deployment files, offline: every compose file (committed and generated) against the
Compose Specification, hadolint on every Dockerfile, shellcheck on every shell script of the repo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.render import compose
from confgen.runtime.deployment import plan_deployment
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: scripts/test installs requirements/dev.txt"
    return str(path)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def _repo_files() -> list[Path]:
    """Tracked files and new ones git does not ignore (no venvs, no node_modules, no run state)."""
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"])
    assert listed.returncode == 0, listed.stderr
    paths = [REPO / line for line in listed.stdout.splitlines() if "node_modules/" not in line]
    return [p for p in paths if p.is_file()]


def shell_scripts() -> list[Path]:
    scripts = []
    for path in _repo_files():
        if path.suffix in {".py", ".yml", ".yaml", ".md", ".txt", ".lock", ".toml", ".j2", ".json"}:
            continue
        try:
            first = path.read_bytes()[:64].split(b"\n", 1)[0]
        except OSError:
            continue
        if first.startswith(b"#!") and (first.endswith((b"/sh", b"/bash", b" sh", b" bash"))):
            scripts.append(path)
    return sorted(scripts)


def test_the_shell_scripts_are_found() -> None:
    names = {str(p.relative_to(REPO)) for p in shell_scripts()}
    assert {"runMe.sh", "scripts/test", "scripts/install-system-deps", ".ci/run", "scripts/entrypoint.sh",
            "scripts/gateway-entrypoint.sh", "tests/e2e/docker/postgres/entrypoint.sh"} <= names


def test_shellcheck_every_shell_script() -> None:
    result = _run([_tool("shellcheck"), *map(str, shell_scripts())])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_every_dockerfile() -> None:
    dockerfiles = sorted(p for p in _repo_files() if p.name.startswith("Dockerfile"))
    assert {p.name for p in dockerfiles} >= {"Dockerfile", "Dockerfile.cpu", "Dockerfile.gateway"}
    result = _run([_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), *map(str, dockerfiles)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    project = Project(REPO)
    out = tmp_path_factory.mktemp("compose")
    files = []
    for label, names in (("gpu", ["gpt-oss-20b", "qwen3-coder-30b"]), ("cpu", ["tiny-cpu"])):
        deployment = plan_deployment(select(project, names, {}), "dgx-spark")
        files.append(compose.write(project, deployment, out / f"{label}.yml"))
    return files


def test_compose_files_follow_the_compose_specification(generated: list[Path]) -> None:
    committed = sorted(p for p in _repo_files() if p.name.startswith(("docker-compose", "compose."))
                       and p.suffix == ".yml")
    assert {p.name for p in committed} >= {"docker-compose.yml", "docker-compose.gpu.yml", "docker-compose.cpu.yml",
                                           "compose.hostnet.yml"}
    result = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                   *map(str, committed), *map(str, generated)])
    assert result.returncode == 0, result.stdout + result.stderr
