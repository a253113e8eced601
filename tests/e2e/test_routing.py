"""Routing across replicas, chaos: simulator replicas on two loopback "hosts" (127.0.0.1, 127.0.0.2) behind TWO
real LiteLLM gateways that share Redis, on the config the compiler renders from deployments.yml; then two real
CPU vLLMs. Each test runs a bounded load, breaks something, and prints requests sent / succeeded / failed and
the usage-ledger rows of its own key (docs/reliability.md quotes these figures).

Test timings (deployments.yml below): retries 2, stream_idle_s 2, request timeout 3 s, allowed_fails 1,
cooldown 3 s, health probes every 2 s (timeout 2 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from confgen.cli import cli
from confgen.load import Project
from confgen.runtime import secret_files
from tests.e2e.keys_support import MASTER_KEY, Gateway, create_key, poll, redis_namespace, scratch_database
from tests.e2e.routing_support import (
    TINY_CPU_MODEL,
    Load,
    Replica,
    Result,
    new_key,
    render,
    report,
    sim_model,
    status_mismatches,
    wait_ledger,
    write_project,
)
from tests.procgroup import stop_group

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORTS = (14510, 14511)
VLLM_PORTS = (18500, 18501)
SIM_FLAGS = ("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "16")
REQUEST_TIMEOUT_S, STREAM_IDLE_S, COOLDOWN_S, HEALTH_INTERVAL_S = 3, 2, 3, 2
# A replica leaves the rotation by cooldown (after allowed_fails + 1 failures) at once, and by the health
# probe within one interval; it is back within cooldown + two probe intervals of answering again.
BACK_WITHIN_S = COOLDOWN_S + 2 * HEALTH_INTERVAL_S + 5


@dataclass
class RouteGateway(Gateway):
    vllm_key: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "VLLM_API_KEY": self.vllm_key}


@dataclass
class Cluster:
    a: Replica  # big on "host" 127.0.0.1
    b: Replica  # big on "host" 127.0.0.2
    small: Replica  # the fallback model
    gateways: tuple[Gateway, Gateway]
    database_url: str
    project: Project
    vllm_key: str

    @property
    def urls(self) -> list[str]:
        return [g.url for g in self.gateways]

    def load(self, key: str, total: int, model: str = "big", **kw: object) -> Load:
        return Load(self.urls, key, model, total, **kw)  # type: ignore[arg-type]

    def settle(self) -> None:
        """Every replica up, without faults, and back in the rotation of both gateways."""
        for replica in (self.a, self.b, self.small):
            if replica.sim is None:
                replica.start()
            replica.faults(hang=False, error_rate=0.0)
        wait_serving(self, {self.a.api_base, self.b.api_base})


def wait_serving(cluster: Cluster, bases: set[str], timeout: float = 30) -> float:
    """Small batches until every base in `bases` has answered one; the seconds until the last of them first
    did (its request's start: a batch that takes long on a busy machine does not count against the replica)."""
    start = time.monotonic()
    first: dict[str, float] = {}

    def served() -> bool:
        for r in cluster.load(MASTER_KEY, 16, concurrency=8).run():
            if r.ok and r.api_base in bases:
                first[r.api_base] = min(first.get(r.api_base, r.started), r.started)
        return bases <= first.keys()

    poll(served, timeout, 0.2, f"traffic on {sorted(bases)}")
    return max(first.values()) - start


def _start_vllm(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A real CPU vLLM for tiny-cpu through the shared entrypoint (what ./runMe.sh runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_PORT": str(port), "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(folder),
           "VLLM_CACHE_ROOT": str(folder / "cache"), "PYTHONUNBUFFERED": "1"}
    for name in ("CONFGEN_ROOT", "PROMETHEUS_MULTIPROC_DIR", "MODEL"):
        env.pop(name, None)
    python = ROOT / ".venv-vllm" / "bin" / "python"
    argv = [str(python), "-m", "confgen", "--root", str(ROOT), "exec-vllm", "--model", "tiny-cpu",
            "--out", str(folder / "generated")]
    with (folder / "vllm.log").open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _wait_vllm(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"vLLM on {port} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll(up, 300, 1.0, f"vLLM on {port} healthy")


def _ensure_tiny_weights() -> None:
    target = ROOT / ".local" / "models" / "tiny-cpu"
    if not (target / "config.json").exists():
        subprocess.run([str(ROOT / ".venv-vllm" / "bin" / "python"), str(ROOT / "scripts" / "build_tiny_model.py"),
                        "--out", str(target)], check=True, capture_output=True, timeout=300)


@dataclass
class VLLMs:
    procs: list[subprocess.Popen[bytes]]
    scratch: Path

    def log(self, port: int) -> Path:
        return self.scratch / str(port) / "vllm.log"


@pytest.fixture(scope="module")
def vllms() -> Iterator[VLLMs]:
    """Two real CPU vLLMs for tiny-cpu, started first: they come up while the simulator tests run."""
    secret_files.ensure_generated(Project(ROOT))  # they read the repo's secrets/VLLM_API_KEY, as runMe.sh does
    _ensure_tiny_weights()
    # vLLM puts its sockets in TMPDIR, and a socket path may not be longer than 107 bytes: a short folder.
    scratch = Path(tempfile.mkdtemp(prefix="routing-vllm-"))
    procs = [_start_vllm(port, scratch / str(port)) for port in VLLM_PORTS]
    try:
        yield VLLMs(procs, scratch)
    finally:
        for proc in procs:
            stop_group(proc)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(vllms: VLLMs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("routing")
    vllm_key = secret_files.require(Project(ROOT), ("VLLM_API_KEY",))["VLLM_API_KEY"]
    a = Replica("127.0.0.1", 15500, "big", vllm_key, *SIM_FLAGS)
    b = Replica("127.0.0.2", 15501, "big", vllm_key, *SIM_FLAGS)
    small = Replica("127.0.0.1", 15502, "small", vllm_key, *SIM_FLAGS)
    with scratch_database() as database_url, redis_namespace() as namespace:
        deployments = {
            "routing": {"retries": 2, "stream_idle_s": STREAM_IDLE_S, "allowed_fails": 1, "cooldown_s": COOLDOWN_S,
                        "health_interval_s": HEALTH_INTERVAL_S, "health_timeout_s": 2},
            "gateway": {"instances": 2, "redis_namespace": namespace.rstrip(":")},
            "models": {
                # b takes three requests in four: the tests break b, so most requests meet the fault.
                "big": {"replicas": [{"api_base": a.api_base}, {"api_base": b.api_base, "weight": 3}],
                        "fallbacks": ["small"]},
                "small": {"replicas": [{"api_base": small.api_base}]},
                "tiny-cpu": {"replicas": [{"api_base": f"http://127.0.0.1:{p}/v1"} for p in VLLM_PORTS],
                             "health_timeout_s": 20, "stream_idle_s": 60},
            },
        }
        project = write_project(folder / "project", deployments, {
            "big": sim_model(REQUEST_TIMEOUT_S, 15590), "small": sim_model(REQUEST_TIMEOUT_S, 15591),
            "tiny-cpu": TINY_CPU_MODEL})
        config = render(project, ["big", "small", "tiny-cpu"], folder / "generated", {})
        gateways = tuple(RouteGateway(port, config, folder / f"gw-{port}", database_url, namespace, vllm_key=vllm_key)
                         for port in GATEWAY_PORTS)
        replicas = [a, b, small]
        try:
            for replica in replicas:
                replica.start()
            for gateway in gateways:
                gateway.spawn()
            for gateway in gateways:
                gateway.wait_healthy(180)
            made = Cluster(a, b, small, (gateways[0], gateways[1]), database_url, project, vllm_key)
            made.settle()
            yield made
        finally:
            for gateway in gateways:
                gateway.stop()
            for replica in replicas:
                replica.stop()


def ledger_check(name: str, cluster: Cluster, prefix: str, results: list[Result], **extra: object) -> None:
    """Print the figures; every request is one ledger row, with the status the client got."""
    rows = wait_ledger(cluster.database_url, prefix, len(results))
    report(name, results, rows, **extra)
    assert len(rows) == len(results), "every request is one ledger row"
    # LiteLLM logs each failed attempt of a retried or fallen-back request too: its row is still the answer.
    assert status_mismatches(results, rows) == []


def test_config_routes_both_replicas_through_both_gateways(cluster: Cluster) -> None:
    config = (cluster.gateways[0].config).read_text()
    assert config.count('model_name: "big"') == 2
    assert "redis_url: os.environ/CONFGEN_REDIS_URL" in config
    assert 'fallbacks: [{"big": ["small"]}]' in config
    key, prefix = new_key(cluster.database_url, "spread")
    results = cluster.load(key, 60, stream_every=3).run()
    ledger_check("baseline", cluster, prefix, results)
    assert all(r.ok for r in results)
    by_replica = Counter(r.api_base for r in results)
    assert by_replica[cluster.b.api_base] > by_replica[cluster.a.api_base] > 0, "weight 3 : 1"
    assert {r.gateway for r in results} == set(cluster.urls)


def test_health_and_routes_command_show_each_deployment(cluster: Cluster) -> None:
    body = httpx.get(f"{cluster.urls[1]}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30).json()
    healthy = {e["api_base"] for e in body["healthy_endpoints"]}
    assert {cluster.a.api_base, cluster.b.api_base, cluster.small.api_base} <= healthy
    (cluster.project.secrets_dir).mkdir(exist_ok=True)
    (cluster.project.secrets_dir / "LITELLM_MASTER_KEY").write_text(MASTER_KEY + "\n")
    out = CliRunner().invoke(cli, ["--root", str(cluster.project.root), "routes", "--gateway", cluster.urls[0]])
    lines = out.output.splitlines()
    assert lines[0] == f"gateway {cluster.urls[0]}"
    assert any(line.split()[:3] == ["big", cluster.b.api_base, "healthy"] for line in lines), out.output
    # The vLLM replicas are not started yet: unhealthy, with the probe's error; exit 3.
    assert any(line.split()[:3] == ["tiny-cpu", f"http://127.0.0.1:{VLLM_PORTS[0]}/v1", "UNHEALTHY:"]
               for line in lines), out.output
    assert out.exit_code == 3


def test_kill_one_replica_traffic_moves_and_returns(cluster: Cluster) -> None:
    cluster.settle()
    key, prefix = new_key(cluster.database_url, "kill")
    served_a = cluster.a.served()
    load = cluster.load(key, 160, stream_every=2).start()
    poll(lambda: load.progress() >= 40, 60, 0.02, "40 requests before the kill")
    killed_at = time.monotonic()
    cluster.b.kill()
    results = load.wait()
    # On a quiet machine the 160 requests end before a health probe has run: send a bounded second
    # batch once the probe interval has passed, so requests after the probe are measured too.
    time.sleep(max(0.0, killed_at + HEALTH_INTERVAL_S + 1.5 - time.monotonic()))
    results += cluster.load(key, 20, stream_every=2).run()
    in_flight = [r for r in results if r.started < killed_at < r.ended]
    failed = [r for r in results if not r.ok]
    late = [r for r in results if r.started > killed_at + HEALTH_INTERVAL_S + 1]
    # Bound: only a stream already under way on the killed replica can fail (its tokens were sent);
    # everything else is retried on the survivor.
    assert all(r.stream and r in in_flight for r in failed), failed
    assert len(failed) <= sum(r.stream for r in in_flight)
    assert all(r.ok for r in results if r.started > killed_at), "no client error after the kill"
    assert {r.api_base for r in results if r.ok and r.started > killed_at} == {cluster.a.api_base}
    assert late, "the load outlasted the probe interval"
    assert cluster.a.served() - served_a >= sum(r.api_base == cluster.a.api_base for r in results)
    cluster.b.start()
    back_after = wait_serving(cluster, {cluster.b.api_base}, timeout=BACK_WITHIN_S + 10)
    ledger_check("kill one replica", cluster, prefix, results, in_flight_at_kill=len(in_flight),
                 streams_in_flight_at_kill=sum(r.stream for r in in_flight),
                 retried_after_probe_interval=sum(r.retries > 0 for r in late),
                 traffic_back_after_restart_s=round(back_after, 1))
    assert back_after <= BACK_WITHIN_S


def test_hung_replica_requests_time_out_and_are_retried(cluster: Cluster) -> None:
    key, prefix = new_key(cluster.database_url, "hang")
    results: list[Result] = []
    hung = 0
    for streamed in (True, False):  # streams first, then plain requests, each against a freshly hung b
        # A health probe (a 1-token completion, so it hangs too) can bench b before any request of the
        # phase reaches it, and then the phase tests nothing: every request was answered by a at once.
        # Run the phase again, at most three times, until one of its requests hung on b and was retried.
        for _attempt in range(3):
            cluster.settle()
            cluster.b.reset_stats()
            cluster.b.faults(hang=True)
            try:
                phase = cluster.load(key, 40, stream_every=1 if streamed else 0).run()
                hung += int(cluster.b.stats()["hung"])
            finally:
                cluster.b.faults(hang=False)
            results += [replace(r, index=r.index + len(results)) for r in phase]
            if any(r.retries > 0 for r in phase):
                break
    retried = [r for r in results if r.retries > 0]
    ledger_check("hang one replica", cluster, prefix, results, requests_hung_on_b=hung,
                 retried_plain=sum(not r.stream for r in retried), retried_streams=sum(r.stream for r in retried),
                 slowest_s=round(max(r.ended - r.started for r in results), 1))
    assert all(r.ok for r in results)
    assert {r.api_base for r in results} == {cluster.a.api_base}
    assert hung >= 2
    assert any(r.stream for r in retried), "a stream that got nothing from the hung replica was retried"
    assert any(not r.stream for r in retried)
    for r in retried:  # each waited one timeout (stream: the idle timeout) per hung attempt, then was answered
        assert r.ended - r.started < (r.retries + 1) * (STREAM_IDLE_S if r.stream else REQUEST_TIMEOUT_S) + 5


def test_replica_answering_500s_is_hidden_by_retries(cluster: Cluster) -> None:
    cluster.settle()
    key, prefix = new_key(cluster.database_url, "errors")
    cluster.b.faults(error_rate=0.2)
    before = cluster.b.stats()["by_status"].get("500", 0)
    try:
        results = cluster.load(key, 120, stream_every=4).run()
        errors = cluster.b.stats()["by_status"].get("500", 0) - before
    finally:
        cluster.b.faults(error_rate=0.0)
    ledger_check("20% 500s on one replica", cluster, prefix, results, injected_500s=errors)
    assert errors >= 1, "the faulty replica answered 500 at least once"
    assert all(r.ok for r in results)


def test_all_replicas_down_the_fallback_answers(cluster: Cluster) -> None:
    cluster.settle()
    key, prefix = new_key(cluster.database_url, "fallback")
    cluster.a.kill()
    cluster.b.kill()
    try:
        results = cluster.load(key, 40, stream_every=2).run()
    finally:
        cluster.a.start()
        cluster.b.start()
    ledger_check("all replicas down", cluster, prefix, results)
    assert all(r.ok for r in results)
    assert {r.group for r in results} == {"small"}, "x-litellm-model-group names the model that answered"
    assert {r.model for r in results} == {"small"}, "so does the response's model field"
    assert all(r.fallbacks == 1 for r in results)


def _away_from_a_minute_boundary() -> float:
    """rpm counts per clock minute: start in the first half of one, so 20 requests stay in it even on a busy
    machine (the test then checks they did); the minute it starts in."""
    second = time.time() % 60
    if second > 30:
        time.sleep(61 - second)
    return time.time() // 60


def test_rate_limit_on_a_key_holds_across_both_gateways(cluster: Cluster) -> None:
    cluster.settle()
    created = create_key(cluster.database_url, "--alias", "rpm-10", "--rpm", "10")
    minute = _away_from_a_minute_boundary()
    results = cluster.load(created["key"], 20, concurrency=2).run()
    assert time.time() // 60 == minute, "the 20 requests ran within one clock minute (else rpm counts two)"
    statuses = [r.status for r in results]
    ledger_check("rpm 10 over two gateways", cluster, created["prefix"], results,
                 answered_by_gateway={u: sum(r.ok for r in results if r.gateway == u) for u in cluster.urls})
    assert statuses.count(200) == 10
    assert statuses.count(429) == 10
    assert {r.gateway for r in results if r.ok} == set(cluster.urls), "both gateways served some of the 10"


def test_real_vllm_two_replicas_one_stopped(cluster: Cluster, vllms: VLLMs) -> None:
    procs = vllms.procs
    bases = {f"http://127.0.0.1:{p}/v1" for p in VLLM_PORTS}
    for proc, port in zip(procs, VLLM_PORTS, strict=True):
        _wait_vllm(proc, port, vllms.log(port))
    poll(lambda: {r.api_base for r in cluster.load(MASTER_KEY, 8, model="tiny-cpu", concurrency=4).run()
                  if r.ok} == bases, 90, 0.5, "both vLLMs serving")
    key, prefix = new_key(cluster.database_url, "vllm")
    load = cluster.load(key, 60, model="tiny-cpu", concurrency=4, stream_every=3).start()
    poll(lambda: load.progress() >= 15, 60, 0.05, "15 requests before the stop")
    # vLLM takes a while to shut down on SIGTERM (longer on a busy machine): the stop is the span from the
    # signal to its exit, and what is asserted is measured against that span, not against a guess of it.
    stop_sent = time.monotonic()
    stop_group(procs[1])
    stopped_at = time.monotonic()
    results = load.wait()
    # The load may have ended while vLLM was still shutting down: a bounded batch a moment after its exit, so
    # that requests sent once it is gone are measured too.
    time.sleep(max(0.0, stopped_at + 1.5 - time.monotonic()))
    results += cluster.load(key, 12, model="tiny-cpu", concurrency=4, stream_every=3).run()
    ledger_check("real vLLM, one of two stopped", cluster, prefix, results,
                 stopped_after_s=round(stop_sent - min(r.started for r in results), 1),
                 shutdown_s=round(stopped_at - stop_sent, 1),
                 in_flight_at_stop=sum(r.started < stopped_at and r.ended > stop_sent for r in results))
    assert all(r.ok for r in results if r.started > stopped_at), "no client error after the stop"
    assert all(r.ok or (r.stream and r.started < stopped_at and r.ended > stop_sent) for r in results)
    survivor = f"http://127.0.0.1:{VLLM_PORTS[0]}/v1"
    assert {r.api_base for r in results if r.ok and r.started > stopped_at + 1} == {survivor}
