"""The Docker deployment end to end: ./runMe.sh -> docker compose -> real containers (the CPU image of the
vLLM node serving tiny-cpu, the gateway image, PostgreSQL), host networking only, on test ports.

Cold (no images): a few minutes, mostly the image builds; see tests/e2e/docker_harness.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import psycopg
import pytest

from tests.e2e import docker_harness as harness
from tests.e2e.docker_harness import DOCKER, ROOT

pytestmark = pytest.mark.e2e
MODEL = "tiny-cpu"
GATEWAY_PORT = 14900
VLLM_PORT = 18900
PG_PORT = 15900
PROJECT = "confgen-e2e"
HOSTNET = "tests/e2e/docker/compose.hostnet.yml"
START_TIMEOUT = "600"


@dataclass(frozen=True)
class Env:
    env: dict[str, str]
    run_dir: Path

    def runme(self, *args: str, extra: dict[str, str] | None = None,
              timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "runMe.sh"), *args], env={**self.env, **(extra or {})}, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def containers(self, project: str = PROJECT) -> list[str]:
        return harness.must([DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                            env=self.env).split()

    def remove(self, project: str) -> None:
        """Containers and volumes of a test project (the test starts from an empty database)."""
        ids = self.containers(project)
        if ids:
            harness.sh([DOCKER, "rm", "-f", *ids], env=self.env)
        volumes = harness.sh([DOCKER, "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={project}"], env=self.env).stdout.split()
        if volumes:
            harness.sh([DOCKER, "volume", "rm", "-f", *volumes], env=self.env)


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("docker")
    with harness.dockerd(tmp / "dockerd.log"):
        harness.compose_plugin(tmp / "docker-config")
        harness.base_image()
        harness.wheelhouse()
        env = {**harness.env_for(tmp / "docker-config"), "CONFGEN_DEPLOY": "docker", "MODEL": MODEL,
               "LITELLM_PORT": str(GATEWAY_PORT), "VLLM_PORT": str(VLLM_PORT), "TEST_PGPORT": str(PG_PORT),
               "CONFGEN_RUN_DIR": str(tmp / "run"), "COMPOSE_PROJECT_NAME": PROJECT,
               "CONFGEN_COMPOSE_OVERRIDES": HOSTNET, "CONFGEN_START_TIMEOUT": START_TIMEOUT,
               "HF_CACHE": str(tmp / "hf-cache")}
        handle = Env(env, tmp / "run")
        handle.remove(PROJECT)
        try:
            yield handle
        finally:
            handle.runme("stop", timeout=300)
            handle.remove(PROJECT)


def test_a_failing_vllm_node_takes_the_half_started_stack_down(docker_env: Env) -> None:
    """Runs first (it also builds the images): vLLM exits at start-up -> exit 3, its log, nothing left."""
    project = f"{PROJECT}-broken"
    docker_env.remove(project)
    result = docker_env.runme(extra={"COMPOSE_PROJECT_NAME": project, "CONFGEN_RUN_DIR": str(docker_env.run_dir / "b"),
                                     "CONFGEN_COMPOSE_OVERRIDES": f"{HOSTNET}:tests/e2e/docker/compose.broken.yml"})
    try:
        assert result.returncode == 3, result.stdout + result.stderr
        assert "error: vllm-node: exited" in result.stderr, result.stderr
        assert "max" in result.stderr.lower()  # vLLM's own complaint about --max-model-len, from its log
        assert "taking the stack down" in result.stderr
        assert docker_env.containers(project) == []
        assert not (docker_env.run_dir / "b" / "docker.json").exists()
    finally:
        docker_env.remove(project)


def test_unknown_model_exits_in_the_container_before_any_vllm_work(docker_env: Env) -> None:
    result = harness.sh([DOCKER, "run", "--rm", "--network", "host", "-e", "MODEL=no-such-model",
                         "confgen/vllm-node-cpu:latest"], timeout=120, env=docker_env.env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: MODEL: unknown model 'no-such-model'" in result.stderr
    assert "tiny-cpu" in result.stderr  # the known models are listed
    assert "vllm serve" not in result.stdout


def test_nvidia_runtime_absent_is_said_plainly(docker_env: Env) -> None:
    from confgen.errors import LaunchError
    from confgen.runtime import docker_host

    host = docker_host.detect(docker_env.env)  # the real daemon: runc only
    assert "nvidia" not in host.runtimes
    with pytest.raises(LaunchError) as err:
        docker_host.require_nvidia(host)
    assert "the NVIDIA container runtime is not set up" in str(err.value)
    assert "nvidia-ctk runtime configure --runtime=docker" in str(err.value)


@dataclass(frozen=True)
class Deployed:
    base: str
    key: str
    env: Env
    started: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="module")
def deployed(docker_env: Env) -> Deployed:
    started = time.monotonic()
    result = docker_env.runme()
    assert result.returncode == 0, f"./runMe.sh failed:\n{result.stdout}\n{result.stderr}"
    key = (ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
    return Deployed(f"http://127.0.0.1:{GATEWAY_PORT}", key, docker_env, result, time.monotonic() - started)


def _oa(d: Deployed, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{d.base}/v1", api_key=key or d.key, max_retries=0, timeout=60)


def _usage_rows() -> int:
    password = (ROOT / "secrets" / "POSTGRES_PASSWORD").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=PG_PORT, user="confgen", dbname="confgen", password=password,
                         connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM confgen_usage").fetchone()
    return int(row[0]) if row else 0


def _rows_reach(at_least: int, within_s: float = 30) -> int:
    deadline = time.monotonic() + within_s
    rows = _usage_rows()
    while rows < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = _usage_rows()
    return rows


def _settled_rows(quiet_s: float = 2.0, within_s: float = 30) -> int:
    """The row count once the ledger's batches stop arriving."""
    deadline = time.monotonic() + within_s
    rows = _usage_rows()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _usage_rows()
        if now == rows:
            return rows
        rows = now
    return rows


def test_start_prints_the_endpoint_and_all_turn_healthy(deployed: Deployed) -> None:
    out = deployed.started.stdout
    assert f"ready: {MODEL} behind the gateway at {deployed.base}" in out
    assert f"OpenAI base URL:     {deployed.base}/v1" in out
    services = ("db", "redis", "vllm-node", "gateway")  # docker-compose.yml's services, each with a healthcheck
    for service in services:
        assert f"  {service}: healthy" in out
    status = deployed.env.runme("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count(" healthy ") == len(services)


def test_models_lists_the_model(deployed: Deployed) -> None:
    assert [m.id for m in _oa(deployed).models.list().data] == [MODEL]


def test_chat_and_streaming(deployed: Deployed) -> None:
    reply = _oa(deployed).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                                  max_tokens=8)
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens >= 1
    chunks = list(_oa(deployed).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.usage for c in chunks if c.usage][-1].completion_tokens >= 1


def test_anthropic_messages(deployed: Deployed) -> None:
    client = anthropic.Anthropic(base_url=deployed.base, auth_token=deployed.key, api_key=None, max_retries=0)
    reply = client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
    assert reply.role == "assistant"
    assert reply.usage.output_tokens >= 1


@pytest.mark.parametrize("key", [None, "sk-wrong-key-0123456789"])
def test_missing_or_wrong_key_is_401(deployed: Deployed, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(f"{deployed.base}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 401


def test_secrets_are_files_never_in_container_config(deployed: Deployed) -> None:
    ids = deployed.env.containers()
    inspected = harness.must([DOCKER, "inspect", *ids], env=deployed.env.env)
    for name in ("LITELLM_MASTER_KEY", "VLLM_API_KEY", "POSTGRES_PASSWORD"):
        assert (ROOT / "secrets" / name).read_text().strip() not in inspected, f"{name} in docker inspect"
    gateway = next(c for c in json.loads(inspected) if c["Config"]["Labels"]["com.docker.compose.service"] == "gateway")
    assert not any(e.startswith("DATABASE_URL=") for e in gateway["Config"]["Env"])
    assert {m["Destination"] for m in gateway["Mounts"]} >= {"/run/secrets/LITELLM_MASTER_KEY",
                                                             "/app/generated_configs", "/app/state"}


def test_gateway_reads_the_config_the_vllm_node_wrote_to_tmpfs(deployed: Deployed) -> None:
    config = harness.must([DOCKER, "exec", f"{PROJECT}-gateway-1", "cat", "/app/generated_configs/config.yaml"],
                          env=deployed.env.env)
    assert "os.environ/LITELLM_MASTER_KEY" in config
    assert f"http://127.0.0.1:{VLLM_PORT}/v1" in config
    mounts = harness.must([DOCKER, "exec", f"{PROJECT}-vllm-node-1", "cat", "/proc/mounts"], env=deployed.env.env)
    assert any(line.split()[1] == "/app/generated_configs" and line.split()[2] == "tmpfs"
               for line in mounts.splitlines())


def test_usage_rows_land_in_postgres(deployed: Deployed) -> None:
    before = _usage_rows()
    for _ in range(3):
        _oa(deployed).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4)
    assert _rows_reach(before + 3) >= before + 3


def test_zz_compose_down_and_up_lose_no_usage_rows(deployed: Deployed) -> None:
    """Runs last: a request just before `./runMe.sh stop` still lands; the database volume outlives down."""
    before = _settled_rows()
    assert before >= 6  # the requests above, rejected ones included
    _oa(deployed).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4)
    stopped = deployed.env.runme("stop", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert deployed.env.containers() == []
    again = deployed.env.runme()
    assert again.returncode == 0, again.stdout + again.stderr
    assert _rows_reach(before + 1) == before + 1  # flushed on stop (or replayed from the spool volume)
    assert _settled_rows() == before + 1  # and not counted twice
