"""Every file a target writes is owner-only (0600): generated configs carry the catalog's env, URLs and paths,
and all their readers (nginx's master, Prometheus, the containers) run as the user who renders them."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from confgen.cli import cli

REPO = Path(__file__).resolve().parents[2]


def written_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("argv", "some"), [
    (["render"], "models.yml"),
    (["nginx", "--https-port", "18443", "--http-port", "18080"], "nginx.conf"),
    (["k8s"], "base/kustomization.yaml"),
    (["prometheus"], "prometheus.yml"),
])
def test_targets_write_owner_only_files(run_cli: Callable[..., Result], tmp_path: Path, argv: list[str],
                                        some: str) -> None:
    out = tmp_path / "out"
    extra = ["--certs", str(tmp_path / "certs")] if argv[0] == "nginx" else []
    result = run_cli(*argv, "--model", "tiny-cpu", "--out", str(out), *extra)
    assert result.exit_code == 0, result.output
    modes = written_files(out)
    assert some in modes
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o600} == {}


def test_compose_writes_an_owner_only_file(tmp_path: Path) -> None:
    out = tmp_path / "docker-compose.models.yml"
    result = CliRunner().invoke(cli, ["--root", str(REPO), "compose", "--model", "gpt-oss-20b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
