"""Start-up refusals of the local stack, before anything is installed or started (no services)."""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from confgen.errors import LaunchError
from confgen.load import Project
from confgen.runtime import host as host_mod
from confgen.runtime import ports, secret_files
from confgen.runtime.rundir import Proc, RunDir, State
from confgen.runtime.stack import choose_model

NO_GPU = host_mod.HostInfo(gpu=False, gpu_reason="no nvidia-smi and no /dev/nvidia0", docker=False)
GPU = host_mod.HostInfo(gpu=True, gpu_reason="GPU 0: NVIDIA GB10", docker=True)


@pytest.fixture
def cpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_mod, "detect", lambda: NO_GPU)


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_default_model_depends_on_the_gpu() -> None:
    assert choose_model({}, NO_GPU) == ("smollm2-135m", "no NVIDIA GPU (no nvidia-smi and no /dev/nvidia0): "
                                        "the CPU build of vLLM serves it")
    assert choose_model({}, GPU) == ("glm47-flash", "an NVIDIA GPU was found (GPU 0: NVIDIA GB10)")
    assert choose_model({"MODEL": "x"}, GPU) == ("x", "MODEL is set")


def test_taken_port_is_refused_with_the_setting_to_change(listener: int) -> None:
    with pytest.raises(LaunchError) as err:
        ports.ensure_free("127.0.0.1", listener, "gateway", "LITELLM_PORT")
    assert str(err.value) == (
        f"gateway port 127.0.0.1:{listener}: already in use by another process "
        f"(stop that process (`ss -ltnp 'sport = :{listener}'` shows it) or set LITELLM_PORT to a free port)"
    )
    assert err.value.exit_code == 3


def test_generated_secrets_are_strong_and_private(project: Project) -> None:
    assert secret_files.ensure_generated(project) == ["LITELLM_MASTER_KEY", "VLLM_API_KEY"]
    assert secret_files.ensure_generated(project) == []
    for name in ("LITELLM_MASTER_KEY", "VLLM_API_KEY"):
        path = project.secrets_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) > 40
    assert secret_files.masked("sk-abcdefghijklmnopqrstuvwxyz") == "sk-abc...wxyz"


def test_weak_or_missing_secret_is_refused(project: Project, write_secret: Callable[[str, str], Path]) -> None:
    write_secret("LITELLM_MASTER_KEY", "sk-1234")
    with pytest.raises(Exception) as err:  # noqa: PT011 - ConfgenError, checked by message
        secret_files.require(project, ("LITELLM_MASTER_KEY", "VLLM_API_KEY"))
    assert str(err.value) == (
        "secrets/LITELLM_MASTER_KEY: weak secret (shorter than 16 characters or a known default) "
        "(delete secrets/LITELLM_MASTER_KEY and run ./runMe.sh to generate a strong one)\n"
        "secrets/VLLM_API_KEY: missing secret (write the value to secrets/VLLM_API_KEY (mode 0600))"
    )


def test_up_unknown_model_lists_known(run_cli: Callable[..., Result], cpu_host: None, tmp_path: Path) -> None:
    result = run_cli("up", env={"MODEL": "glm-4.7", "CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 1
    assert "error: MODEL: unknown model 'glm-4.7' (known models: tiny-cpu)" in result.stderr
    assert "Traceback" not in result.output


def test_up_gpu_model_without_gpu_suggests_the_cpu_model(run_cli: Callable[..., Result], cpu_host: None,
                                                    write_model: Callable[..., Path], tiny_doc: dict[str, object],
                                                    tmp_path: Path) -> None:
    doc = dict(tiny_doc)
    doc["info"] = {**tiny_doc["info"], "device": "gpu", "gpu_memory_gb": 67}  # type: ignore[dict-item]
    doc["serve"] = {"port": 8001}
    write_model("big", doc)
    result = run_cli("up", env={"MODEL": "big", "CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: MODEL=big: needs an NVIDIA GPU (67 GB); this machine has none (no nvidia-smi and no "
        "/dev/nvidia0) (run MODEL=smollm2-135m ./runMe.sh on this machine)"
    )


def test_up_refuses_a_taken_gateway_port(run_cli: Callable[..., Result], cpu_host: None, listener: int,
                                         tmp_path: Path) -> None:
    result = run_cli("up", env={"MODEL": "tiny-cpu", "LITELLM_PORT": str(listener),
                                "CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 3
    assert f"error: gateway port 127.0.0.1:{listener}: already in use by another process" in result.stderr


def test_second_start_is_refused_while_running(run_cli: Callable[..., Result], cpu_host: None,
                                               tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.make()
    # This test process stands in for a running stack: its pid is alive.
    import os

    run.write(State(model="other", started_at="now", gateway="http://127.0.0.1:4000",
                    procs=[Proc("litellm", os.getpid(), "log", "http://127.0.0.1:4000")]))
    same = run_cli("up", env={"MODEL": "other", "CONFGEN_RUN_DIR": str(run.path)})
    assert same.exit_code == 0
    assert "already running: other at http://127.0.0.1:4000" in same.stdout
    different = run_cli("up", env={"MODEL": "tiny-cpu", "CONFGEN_RUN_DIR": str(run.path)})
    assert different.exit_code == 3
    assert "error: runMe.sh: other is already running at http://127.0.0.1:4000" in different.stderr


def test_stale_state_is_cleared(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.make()
    run.write(State(model="x", started_at="t", gateway="g", procs=[Proc("vllm", 2**22 + 12345, "l", "u")]))
    from confgen.runtime.stack import _running

    assert _running(run) is None
    assert not run.state_file.exists()
