"""The tuned gateway launch (stack.gateway_launch) on the real LiteLLM proxy in front of the simulator: one
worker serves its metrics from memory, the access log is off while start-up lines stay, and usage rows
still reach the ledger promptly although the writer now batches them.

Ports: gateway 14245, simulator 15240 (the gateway benchmark's ranges).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.render import write_all
from confgen.runtime import datastores
from confgen.runtime.rundir import Proc, RunDir
from confgen.runtime.runner import stop_procs, wait_healthy
from confgen.runtime.stack import gateway_launch
from tests.e2e.keys_support import MASTER_KEY, MODEL, VLLM_KEY, poll, redis_namespace, scratch_database
from tests.simproc import port_is_free, running_sim

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SIM_PORT, GW_PORT = 15240, 14245


@dataclass
class Gateway:
    url: str
    log: Path
    database: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    assert port_is_free(GW_PORT), f"port {GW_PORT} is in use; this test needs it"
    tmp = tmp_path_factory.mktemp("tuning")
    with scratch_database() as url, redis_namespace() as prefix, \
            running_sim(SIM_PORT, "--served-model-name", MODEL, "--ttft-ms", "0", "--itl-ms", "1",
                        env={"VLLM_API_KEY": VLLM_KEY}):
        run = RunDir(tmp / "run")
        run.make()
        environ = {**os.environ, "VLLM_PORT": str(SIM_PORT), "LITELLM_PORT": str(GW_PORT), "LITELLM_NUM_WORKERS": "1",
                   "DATABASE_URL": url, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "stale")}
        selection = select(Project(ROOT), [MODEL], environ)
        write_all(selection, run.generated)
        settings = selection.gvars.settings
        stores = {**datastores.gateway_env(settings, run), "CONFGEN_REDIS_PREFIX": prefix}
        keys = {"LITELLM_MASTER_KEY": MASTER_KEY, "VLLM_API_KEY": VLLM_KEY}
        argv, env = gateway_launch(run, environ={**environ, **stores}, secrets=keys, settings=settings)
        log = run.logs / "litellm.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=run.generated, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        url_gw = f"http://127.0.0.1:{GW_PORT}"
        try:
            wait_healthy("LiteLLM gateway", proc, log, lambda: _ok(f"{url_gw}/health/liveliness"), 180)
            yield Gateway(url_gw, log, url, env)
        finally:
            stop_procs([Proc("litellm", proc.pid, str(log), url_gw)])


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _chat(gw: Gateway, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **extra}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {MASTER_KEY}"})


def test_one_worker_serves_metrics_from_memory(gateway: Gateway) -> None:
    assert "PROMETHEUS_MULTIPROC_DIR" not in gateway.env
    for _ in range(3):
        assert _chat(gateway).status_code == 200
    resp = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10,
                     follow_redirects=True)
    assert resp.status_code == 200
    total = sum(float(line.rsplit(" ", 1)[1]) for line in resp.text.splitlines()
                if line.startswith("confgen_requests_total{"))
    assert total >= 3
    assert "confgen_rejected_requests_total" in resp.text  # our series, in the same registry


def test_access_log_is_off_and_start_up_lines_stay(gateway: Gateway) -> None:
    assert _chat(gateway, stream=True).status_code == 200
    text = gateway.log.read_text(errors="replace")
    assert "Uvicorn running on" in text
    assert "POST /v1/chat/completions" not in text


def test_usage_rows_reach_the_ledger_in_batches(gateway: Gateway) -> None:
    def rows() -> int:
        with psycopg.connect(gateway.database, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM confgen_usage WHERE key_alias = 'master'").fetchone()
        return int(row[0]) if row else 0

    before = rows()
    for _ in range(5):
        assert _chat(gateway).status_code == 200
    poll(lambda: rows() >= before + 5, timeout=10, what="5 new ledger rows")
