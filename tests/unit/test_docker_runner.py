"""The Docker runner (confgen/runtime/docker_runner.py) against a stand-in docker client that records its calls:
what `docker run` gets (host network, --init, the label, environment by name only), and the vLLM node container
the controller's --runner docker declares. The real containers: tests/e2e/test_ondemand_docker.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from confgen.catalog import select
from confgen.errors import LaunchError
from confgen.load import Project
from confgen.runtime.docker_runner import Container, DockerRunner, host_user, vllm_container
from confgen.runtime.rundir import RunDir
from confgen.runtime.runner import ServerSpec

FAKE = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in inspect) echo "false 3";; esac
"""


@pytest.fixture
def docker(tmp_path: Path) -> tuple[str, Path]:
    client = tmp_path / "docker"
    client.write_text(FAKE)
    client.chmod(client.stat().st_mode | stat.S_IXUSR)
    return str(client), tmp_path / "calls"


def test_run_passes_environment_by_name_and_uses_the_host_network(docker: tuple[str, Path], tmp_path: Path) -> None:
    client, calls = docker
    runner = DockerRunner(client, {**os.environ, "FAKE_DOCKER_LOG": str(calls)}, "t",
                          {"a": Container("img:1", ("/x:/x:ro",), gpus="all", user="1:2", ipc="host")})
    spec = ServerSpec("a", ["serve", "--port", "9"], {"VLLM_API_KEY": "s3cret-value"}, tmp_path, tmp_path / "a.log",
                      "http://127.0.0.1:9")
    handle = runner.start(spec)
    assert handle.name == "t-a"
    assert runner.exit_code(handle) == 3
    runner.stop([handle], grace_s=2)
    lines = calls.read_text().splitlines()
    assert lines[:2] == ["rm -f t-a", "run -d --name t-a --label io.confgen.controller=t --network host --init "
                         "-e VLLM_API_KEY -v /x:/x:ro --gpus all --user 1:2 --ipc host img:1 serve --port 9"]
    assert "s3cret-value" not in calls.read_text()
    assert "stop -t 2 t-a" in lines
    assert "rm -f t-a" in lines[2:]


def test_a_server_without_a_container_is_refused(docker: tuple[str, Path], tmp_path: Path) -> None:
    runner = DockerRunner(docker[0], dict(os.environ))
    with pytest.raises(LaunchError) as refused:
        runner.start(ServerSpec("b", [], {}, tmp_path, tmp_path / "b.log", "http://127.0.0.1:9", label="vLLM (b)"))
    assert str(refused.value.problems[0]) == ("vLLM (b): no container is declared for this server (declare one in "
                                              "DockerRunner.containers, keyed by the server's name)")


def test_the_vllm_node_container_is_composes_on_the_host_network(project: Project, tmp_path: Path) -> None:
    model = select(project, ["tiny-cpu"], {}).models[0]
    run = RunDir(tmp_path / "run")
    spec, container = vllm_container(project.root, run, model, image="confgen/vllm-node:latest",
                                     hf_cache=tmp_path / "hf", vllm_args="--gpu-memory-utilization 0.40",
                                     routes=["tiny-cpu"])
    assert spec.argv == ["--route", "tiny-cpu"]  # after the image's entrypoint (scripts/entrypoint.sh)
    assert spec.env == {"MODEL": "tiny-cpu", "VLLM_HOST": "127.0.0.1",
                        "CONFGEN_VLLM_ARGS": "--gpu-memory-utilization 0.40", "HF_HOME": "/home/app/.cache/huggingface"}
    assert spec.url == f"http://127.0.0.1:{model.port}"
    assert (container.gpus, container.ipc, container.user) == (None, "host", host_user())
    assert f"{tmp_path / 'hf'}:/home/app/.cache/huggingface" in container.mounts
    assert f"{project.root / 'secrets'}:/app/secrets:ro" in container.mounts
