"""The on-demand controller owning real containers through the Docker runner (confgen/runtime/docker_runner.py):
two model servers whose budget holds one at a time swap containers, the evicted one is stopped and removed,
and a container that fails at start says why. The servers are SIMULATED vLLMs (confgen.sim) run inside the
containers from this checkout (its venv and Python interpreter mounted read-only into a small Debian image:
no registry can be pulled here); host networking only (tests/e2e/docker_harness.py).

Ports: the controller 127.0.0.1:15740, the simulators 15741 and 15742. About 30 s with a warm image.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from confgen.controller.api import app
from confgen.controller.core import Controller
from confgen.controller.plan import Member, OnDemandPlan
from confgen.plan import Gpu, GpuProfile
from confgen.routing.schema import OnDemandModel
from confgen.runtime.docker_runner import LABEL, Container, DockerRunner, host_user
from confgen.runtime.runner import ServerSpec
from tests.e2e import docker_harness as harness
from tests.e2e.docker_harness import DOCKER, ROOT

pytestmark = pytest.mark.e2e
PORT = 15740
SIM_PORTS = {"a": 15741, "b": 15742}
TOKEN = "h17b-docker-token"
PREFIX = "confgen-h17b"
IMAGE = "confgen-test/hostpython:1"
# The host's interpreter needs these shared libraries, which the minimal base image lacks.
DOCKERFILE = f"""FROM {harness.BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 libffi8 libsqlite3-0 libbz2-1.0 \\
    liblzma5 zlib1g && rm -rf /var/lib/apt/lists/*
"""


def _image(tmp: Path) -> None:
    if harness.sh([DOCKER, "image", "inspect", IMAGE]).returncode == 0:
        return
    (tmp / "Dockerfile").write_text(DOCKERFILE)
    harness.must([DOCKER, "build", "--network", "host", "-t", IMAGE, str(tmp)], timeout=600,
                 env={**harness.env_for(tmp / "docker-config")})


def _plan() -> OnDemandPlan:
    gpu = Gpu("test-100", GpuProfile(description="test", memory_gb=100, ceiling=1.0, swap="stop"), "test")
    members = {n: Member(n, n, "gpu", 60, 0, 60.0, 0.0, OnDemandModel(load_timeout_s=60)) for n in ("a", "b", "x")}
    return OnDemandPlan(gpu, "stop", "test profile", 5.0, PORT, 100, members)


def _spec(name: str, logs: Path) -> ServerSpec:
    python = str(ROOT / ".venv" / "bin" / "python")
    if name == "x":  # a server that cannot start
        argv = [python, "-c", "import sys; print('ValueError: no weights at /nowhere'); sys.exit(1)"]
        url = "http://127.0.0.1:15743"
    else:
        argv = [python, "-m", "confgen.sim", "--served-model-name", name, "--port", str(SIM_PORTS[name]),
                "--startup-s", "1", "--itl-ms", "5", "--output-tokens", "8"]
        url = f"http://127.0.0.1:{SIM_PORTS[name]}"
    return ServerSpec(name, argv, {"PYTHONUNBUFFERED": "1"}, ROOT, logs / f"{name}.log", url, label=f"sim {name}")


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("ondemand-docker")
    with harness.dockerd(tmp / "dockerd.log"):
        harness.base_image()
        _image(tmp)
        # The checkout (its venv) and the interpreter the venv points at, read-only, at the same paths.
        mounts = (f"{ROOT}:{ROOT}:ro", f"{sys.base_prefix}:{sys.base_prefix}:ro")
        container = Container(IMAGE, mounts, user=host_user(), workdir=str(ROOT))
        runner = DockerRunner(DOCKER, harness.env_for(tmp / "docker-config"), PREFIX,
                              dict.fromkeys(("a", "b", "x"), container))
        runner.remove_all()
        ctl = Controller(_plan(), {n: _spec(n, tmp) for n in ("a", "b", "x")}, runner, poll_s=0.5, drain_s=0.3)
        server = uvicorn.Server(uvicorn.Config(app(ctl, TOKEN), host="127.0.0.1", port=PORT, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "the controller's API did not start"
                time.sleep(0.1)
            yield ctl
        finally:
            server.should_exit = True
            thread.join(60)
            runner.remove_all()


def _ensure(name: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{PORT}/models/{name}/ensure-ready", timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"})


def _running() -> list[str]:
    out = subprocess.run([DOCKER, "ps", "--filter", f"label={LABEL}={PREFIX}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return sorted(out.split())


def _answer(name: str) -> dict[str, Any]:
    resp = httpx.post(f"http://127.0.0.1:{SIM_PORTS[name]}/v1/chat/completions", timeout=30,
                      json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


def test_two_containers_swap_within_the_budget(controller: Controller) -> None:
    started = time.monotonic()
    assert _ensure("a").status_code == 200
    first = time.monotonic() - started
    assert _running() == [f"{PREFIX}-a"]
    assert _answer("a")["model"] == "a"
    started = time.monotonic()
    assert _ensure("b").status_code == 200  # 60 + 60 > 100: a leaves
    swap = time.monotonic() - started
    assert _running() == [f"{PREFIX}-b"]
    assert _answer("b")["model"] == "b"
    assert any(e.startswith("evicting a (idle") and "to fit b" in e for e in controller.events), controller.events
    assert _ensure("a").status_code == 200
    assert _running() == [f"{PREFIX}-a"]
    states = {n: s.state for n, s in controller.slots.items()}
    assert states == {"a": "ready", "b": "stopped", "x": "stopped"}
    print(f"\ncontainer start {first:.1f} s; swap a -> b (stop + remove a, start b) {swap:.1f} s")


def test_a_container_that_fails_to_start_says_why(controller: Controller) -> None:
    resp = _ensure("x")
    assert resp.status_code == 503
    assert resp.json()["error"].startswith("x failed to start: exited with code 1 during start-up: "
                                           "ValueError: no weights at /nowhere (log: ")
    assert f"{PREFIX}-x" not in _running()
    assert _ensure("a").status_code == 200  # the others keep working
