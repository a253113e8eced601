"""Monitoring end to end: ./runMe.sh up --monitoring starts the CPU vLLM, the gateway with two workers
and Debian's Prometheus; traffic through the gateway must show up in Prometheus with the right labels
and amounts, summed over both workers, and every metric the dashboards use must exist.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict
from psycopg import sql

from confgen import dashboards
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e
MODEL = "tiny-cpu"
GATEWAY_PORT = int(os.environ.get("E2E_MON_LITELLM_PORT", "14800"))
VLLM_PORT = int(os.environ.get("E2E_MON_VLLM_PORT", "18800"))
PROMETHEUS_PORT = int(os.environ.get("E2E_MON_PROMETHEUS_PORT", "19090"))
NODE_EXPORTER_PORT = int(os.environ.get("E2E_MON_NODE_EXPORTER_PORT", "19100"))
PLAIN, STREAMED, BAD_MODEL, BAD_KEY = 16, 6, 2, 2
OK_SERIES = f'model="{MODEL}",status_code="200"'


class Key(str):
    """A key whose repr (in pytest's failure reports) does not show it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'sk-***'"


@dataclass
class Mon:
    gateway: str
    prometheus: str
    key: str
    run_dir: Path
    env: dict[str, str] = field(repr=False)
    traffic: dict[str, Any] = field(default_factory=dict)

    def runme(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "runMe.sh"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        assert resp.status_code == 200, f"{expr}: {resp.text}"
        result: list[dict[str, Any]] = resp.json()["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The value of a one-series expression; 0 when it has no series (a counter not yet created)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def mon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mon]:
    run_dir = tmp_path_factory.mktemp("mon-run")
    database = f"e2e_monitoring_{os.getpid()}"  # its own keys and ledger, dropped at the end
    env = {**os.environ, "CONFGEN_RUN_DIR": str(run_dir), "MODEL": MODEL, "MONITORING": "1",
           "LITELLM_PORT": str(GATEWAY_PORT), "VLLM_PORT": str(VLLM_PORT),
           "PROMETHEUS_PORT": str(PROMETHEUS_PORT), "LITELLM_NUM_WORKERS": "2",
           "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}"}
    env.pop("CONFGEN_ROOT", None)
    handle = Mon(f"http://127.0.0.1:{GATEWAY_PORT}", f"http://127.0.0.1:{PROMETHEUS_PORT}", Key(), run_dir, env)
    started = handle.runme()
    try:
        assert started.returncode == 0, f"./runMe.sh up --monitoring failed:\n{started.stdout}\n{started.stderr}"
        handle.key = Key((ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip())
        yield handle
    finally:
        handle.runme("stop", timeout=120)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def wait_for_scrape_after(mon: Mon, moment: float, timeout: float = 60) -> None:
    """Until every target has been scraped after `moment` (bounded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        times = [float(r["value"][1]) for r in mon.query('timestamp(up{job=~"gateway|vllm"})')]
        if len(times) == 2 and min(times) > moment:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus did not scrape both targets within {timeout} s")


def chat(mon: Mon, i: int, *, stream: bool = False, model: str = MODEL, key: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"Hi {i}"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    # A new connection per request, so the kernel spreads them over both workers.
    with httpx.Client(timeout=60) as client:
        return client.post(f"{mon.gateway}/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {key or mon.key}"})


def usage_of(resp: httpx.Response) -> tuple[int, int]:
    assert resp.status_code == 200, resp.text
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
        usage = [c["usage"] for c in chunks if c.get("usage")][-1]
    else:
        usage = resp.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def per_worker(mon: Mon, metric: str, match: Callable[[dict[str, str]], bool]) -> dict[int, float]:
    """A counter's value in each gateway worker's own file (PROMETHEUS_MULTIPROC_DIR)."""
    values: dict[int, float] = {}
    for path in (mon.run_dir / "scratch" / "prometheus-multiproc").glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _family, name, labels, _help = json.loads(key)
            if name == metric and match(labels):
                values[pid] = values.get(pid, 0.0) + value
    return values


def served_ok(labels: dict[str, str]) -> bool:
    return labels.get("model") == MODEL and labels.get("status_code") == "200"


SNAPSHOT = {
    "requests": f"sum(confgen_requests_total{{{OK_SERIES}}})",
    "gw_in": f'sum(confgen_input_tokens_total{{model="{MODEL}"}})',
    "gw_out": f'sum(confgen_output_tokens_total{{model="{MODEL}"}})',
    "gw_ttft": f'sum(confgen_time_to_first_token_seconds_count{{model="{MODEL}"}})',
    "failed_401": f'sum(confgen_requests_total{{status_code="401",model="{MODEL}"}})',
    "failed_other": 'sum(confgen_requests_total{status_code="400",model="other"})',
    "rejected_invalid": 'sum(confgen_rejected_requests_total{reason="invalid_key"})',
    "vllm_ok": f'sum(vllm:request_success_total{{model="{MODEL}",model_name="{MODEL}"}})',
    "vllm_in": f'sum(vllm:prompt_tokens_total{{model="{MODEL}"}})',
    "vllm_out": f'sum(vllm:generation_tokens_total{{model="{MODEL}"}})',
    "vllm_ttft": f'sum(vllm:time_to_first_token_seconds_count{{model="{MODEL}"}})',
}


@pytest.fixture(scope="module")
def traffic(mon: Mon) -> dict[str, Any]:
    """Send the traffic once (N good requests on both workers, some bad ones); before/after snapshots."""
    wait_for_scrape_after(mon, time.time())
    before = {name: mon.value(expr) for name, expr in SNAPSHOT.items()}
    sent, prompt, completion = 0, 0, 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _batch in range(5):  # until both workers served some (bounded)
            futures = [pool.submit(chat, mon, sent + i, stream=i < STREAMED) for i in range(PLAIN + STREAMED)]
            for future in futures:
                p, c = usage_of(future.result())
                prompt, completion = prompt + p, completion + c
            sent += PLAIN + STREAMED
            if len([v for v in per_worker(mon, "confgen_requests_total", served_ok).values()
                    if v > 0]) >= 2:
                break
    for i in range(BAD_MODEL):
        assert chat(mon, i, model="no-such-model").status_code == 400
    for i in range(BAD_KEY):
        assert chat(mon, i, key="sk-not-a-key").status_code == 401
    streamed = sent // (PLAIN + STREAMED) * STREAMED
    # LiteLLM counts in callbacks that may finish just after the response: wait until they settle.
    deadline = time.monotonic() + 60
    after: dict[str, float] = {}
    while time.monotonic() < deadline:
        wait_for_scrape_after(mon, time.time())
        after = {name: mon.value(expr) for name, expr in SNAPSHOT.items()}
        if (after["requests"] - before["requests"] >= sent and after["failed_401"] - before["failed_401"] >= BAD_KEY
                and after["failed_other"] - before["failed_other"] >= BAD_MODEL):
            break
    delta = {name: after[name] - before[name] for name in SNAPSHOT}
    mon.traffic = {"sent": sent, "streamed": streamed, "prompt": prompt, "completion": completion,
                   "delta": delta, "after": after}
    return mon.traffic


def test_prometheus_scrapes_the_gateway_and_vllm(mon: Mon) -> None:
    wait_for_scrape_after(mon, time.time())
    targets = httpx.get(f"{mon.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    by_job = {t["labels"]["job"]: t for t in targets}
    assert set(by_job) == {"gateway", "vllm"}
    assert all(t["health"] == "up" for t in targets), [t["lastError"] for t in targets]
    assert by_job["gateway"]["scrapeUrl"] == f"{mon.gateway}/metrics/"
    assert by_job["vllm"]["labels"]["model"] == MODEL
    status = mon.runme("status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"healthy                http://127.0.0.1:{PROMETHEUS_PORT}" in status.stdout, status.stdout


def test_requests_are_counted_once_over_both_workers(mon: Mon, traffic: dict[str, Any]) -> None:
    assert traffic["delta"]["requests"] == traffic["sent"]
    workers = per_worker(mon, "confgen_requests_total", served_ok)
    assert len([v for v in workers.values() if v > 0]) == 2, workers
    # What Prometheus scraped (through whichever worker answered) is the sum of both workers' counts.
    assert traffic["after"]["requests"] == sum(workers.values())
    assert traffic["delta"]["vllm_ok"] == traffic["sent"]


def test_tokens_match_the_usage_the_responses_reported(traffic: dict[str, Any]) -> None:
    delta = traffic["delta"]
    assert (delta["gw_in"], delta["gw_out"]) == (traffic["prompt"], traffic["completion"])
    assert (delta["vllm_in"], delta["vllm_out"]) == (traffic["prompt"], traffic["completion"])


def test_time_to_first_token_is_observed(traffic: dict[str, Any]) -> None:
    assert traffic["delta"]["vllm_ttft"] == traffic["sent"]
    assert traffic["delta"]["gw_ttft"] == traffic["streamed"]


def test_errors_and_rejections_are_counted(traffic: dict[str, Any]) -> None:
    delta = traffic["delta"]
    assert delta["failed_other"] == BAD_MODEL  # an unknown model is named "other"
    assert delta["failed_401"] == BAD_KEY
    assert delta["rejected_invalid"] == BAD_KEY  # ours: confgen_rejected_requests_total


def test_model_label_is_consistent(mon: Mon, traffic: dict[str, Any]) -> None:
    assert traffic["sent"]
    for job in ("gateway", "vllm"):
        models = {r["metric"]["model"] for r in mon.query(f'count by (model) ({{job="{job}",model!=""}})')}
        assert models <= {MODEL, "other"}, (job, models)
        assert MODEL in models
    # Our gateway series name the model in `model`; vLLM's metrics get it from the relabelling.
    for metric in ("confgen_requests_total", "confgen_request_latency_seconds_count", "vllm:num_requests_running"):
        assert mon.query(f'{metric}{{model="{MODEL}"}}'), metric


def test_metrics_endpoint_needs_the_master_key(mon: Mon) -> None:
    url = f"{mon.gateway}/metrics/"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer sk-not-a-key"}, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {mon.key}"}, timeout=10).status_code == 200
    # vLLM 0.32 guards /v1 only: its /metrics is protected by listening on 127.0.0.1 (README: Monitoring).
    assert httpx.get(f"http://127.0.0.1:{VLLM_PORT}/metrics", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{VLLM_PORT}/v1/models", timeout=10).status_code == 401


@pytest.fixture(scope="module")
def api_key(mon: Mon) -> str:
    """An API key (not the master key) from `confgen keys create`, in the stack's own database."""
    created = subprocess.run([str(ROOT / ".venv" / "bin" / "confgen"), "--root", str(ROOT), "keys", "create",
                              "--alias", "mon-e2e", "--json"], env=mon.env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    return Key(json.loads(created.stdout)["key"])


def test_metrics_endpoint_refuses_api_keys(mon: Mon, api_key: str) -> None:
    # custom_auth refuses it (403 route_not_allowed); LiteLLM's /metrics guard answers any refusal with 401.
    assert httpx.get(f"{mon.gateway}/metrics/", headers={"Authorization": f"Bearer {api_key}"},
                     timeout=10).status_code == 401


def test_per_key_series(mon: Mon, api_key: str) -> None:
    expr = 'sum(confgen_requests_total{api_key_alias="mon-e2e",status_code="200",model="%s"})'
    before = mon.value(expr % MODEL)
    for i in range(3):
        usage_of(chat(mon, i, key=api_key))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and mon.value(expr % MODEL) < before + 3:
        wait_for_scrape_after(mon, time.time())
    assert mon.value(expr % MODEL) == before + 3
    assert mon.value(f'sum(confgen_output_tokens_total{{api_key_alias="mon-e2e",model="{MODEL}"}})') > 0


@pytest.fixture(scope="module")
def node_exporter_names() -> Iterator[set[str]]:
    """What Debian's node-exporter exposes on this machine (the dashboards' host panels)."""
    proc = subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{NODE_EXPORTER_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        text = ""
        end = time.monotonic() + 30
        while time.monotonic() < end and not text:
            try:
                text = httpx.get(f"http://127.0.0.1:{NODE_EXPORTER_PORT}/metrics", timeout=5).text
            except httpx.HTTPError:
                time.sleep(0.3)
        assert text, "node-exporter did not answer"
        yield {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboards_use_only_metrics_that_exist(mon: Mon, traffic: dict[str, Any],
                                                node_exporter_names: set[str]) -> None:
    assert traffic["sent"]
    scraped = set(httpx.get(f"{mon.prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
    allowed = yaml.safe_load((ROOT / "monitoring" / "exporter-metrics.yml").read_text())
    allow_listed = {name for exporter in allowed.values() for name in exporter["metrics"]}
    known = scraped | node_exporter_names | allow_listed
    missing = []
    for path in sorted((ROOT / dashboards.DASHBOARDS).glob("*.json")):
        for query in dashboards.queries(path):
            missing += [f"{path.name}: {query.panel}: {name}" for name in dashboards.metric_names(query.expr)
                        if name not in known]
            # And Prometheus itself parses and evaluates every expression.
            expr = dashboards.substitute(query.expr)
            if expr.startswith("label_values("):
                continue
            resp = httpx.get(f"{mon.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
            assert resp.status_code == 200, f"{path.name}: {query.panel}: {expr}: {resp.text}"
    assert not missing, "\n".join(missing)


def test_promtool_accepts_the_generated_configs(mon: Mon, tmp_path: Path) -> None:
    local = mon.run_dir / "generated" / "prometheus.yml"
    checked = subprocess.run(["promtool", "check", "config", str(local)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rendered = subprocess.run([str(ROOT / ".venv" / "bin" / "confgen"), "--root", str(ROOT), "prometheus",
                               "--model", MODEL, "--model", "glm47-flash", "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docker = subprocess.run([str(ROOT / ".venv" / "bin" / "confgen"), "--root", str(ROOT), "prometheus", "--docker",
                             "--model", MODEL, "--out", str(tmp_path / "docker")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert docker.returncode == 0, docker.stderr
    for path, flags in ((tmp_path / "prometheus.yml", []), (tmp_path / "docker" / "prometheus.yml", ["--syntax-only"])):
        # The Docker config's secret files exist only inside the container (/run/secrets).
        checked = subprocess.run(["promtool", "check", "config", *flags, str(path)], capture_output=True, text=True,
                                 timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_plot_script_draws_the_overview_from_prometheus(mon: Mon, traffic: dict[str, Any], tmp_path: Path) -> None:
    assert traffic["sent"]
    out = tmp_path / "overview.png"
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "plot_dashboard.py"),
                             "--prometheus", mon.prometheus, "--minutes", "5", "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn, total = (int(x) for x in result.stdout.split(": ")[1].split(" panels")[0].split(" of "))
    assert total == 17
    assert drawn >= 13, result.stdout  # the ledger/auth-cache panels may be empty without keys or a database


def test_stop_ends_prometheus_too(mon: Mon) -> None:
    stopped = mon.runme("stop", timeout=120)
    assert stopped.returncode == 0
    assert "prometheus" in stopped.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{mon.prometheus}/-/ready", timeout=3)
