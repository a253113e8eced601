"""On-demand models with the REAL CPU vLLM, real LiteLLM and PostgreSQL, started by ./runMe.sh: two copies of
the tiny model under two names and a CPU profile whose budget (the fit planner's numbers) holds one of them,
so every switch between them is a swap (stop one vLLM, start the other). A third model cannot start.

One stack for the module (gateway 127.0.0.1:17200, controller 16230, vLLMs 16220-16222, database h17_*);
about 4-5 minutes on 2 busy cores (each swap is a cold start of the CPU vLLM, ~25-40 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from tests.conftest import TINY_DOC
from tests.e2e.conftest import MACHINE_PG, ROOT

pytestmark = pytest.mark.e2e
GATEWAY = 17200
CONTROLLER = 16230
PORTS = {"tiny-a": 16220, "tiny-b": 16221, "tiny-broken": 16222}
ONE_SLOT = "description: test host holding one tiny model (2.0 GB each)\nmemory_gb: 3\nceiling: 0.9\n"


@dataclass(frozen=True)
class OnDemandStack:
    base: str
    key: str
    root: Path
    run: Path
    env: dict[str, str]
    database: str

    def runme(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "runMe.sh"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def controller(self) -> dict[str, Any]:
        token = (self.run / "controller" / "token").read_text().strip()
        result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{CONTROLLER}/status", timeout=10,
                                           headers={"Authorization": f"Bearer {token}"}).json()
        return result


def _project(root: Path) -> None:
    (root / "models").mkdir(parents=True)
    (root / "gpus").mkdir()
    for name in ("vars.env", "litellm_config.template.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    for name in (".venv-vllm", "requirements", "scripts"):  # the installed CPU vLLM (its stamp matches)
        (root / name).symlink_to(ROOT / name)
    weights = ROOT / ".local" / "models" / "tiny-cpu"
    for name, port in PORTS.items():
        doc = {**TINY_DOC, "serve": {"port": port}}
        target = weights if name != "tiny-broken" else root / "no-such-weights"
        doc["command"] = TINY_DOC["command"].replace(".local/models/tiny-cpu", str(target))
        (root / "models" / f"{name}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "gpus" / "one-slot.yml").write_text(ONE_SLOT)
    (root / "deployments.yml").write_text(yaml.safe_dump({"on_demand": {
        "gpu": "one-slot", "controller_port": CONTROLLER, "in_flight_wait_s": 60,
        "models": {"tiny-a": {"preload": True, "load_timeout_s": 300}, "tiny-b": {"load_timeout_s": 300},
                   "tiny-broken": {"load_timeout_s": 120}}}}))


@pytest.fixture(scope="module")
def ondemand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnDemandStack]:
    base = tmp_path_factory.mktemp("h17-ondemand")
    root, run = base / "proj", base / "run"
    _project(root)
    scratch = f"h17_{secrets.token_hex(4)}"
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "MODELS", "PROMETHEUS_MULTIPROC_DIR")}
    env.update({"CONFGEN_ROOT": str(root), "CONFGEN_RUN_DIR": str(run), "LITELLM_PORT": str(GATEWAY),
                "DATABASE_URL": f"{MACHINE_PG}/{scratch}", "CONFGEN_REDIS_PREFIX": f"{scratch}:"})
    handle = OnDemandStack(f"http://127.0.0.1:{GATEWAY}", "", root, run, env, f"{MACHINE_PG}/{scratch}")
    started = handle.runme()
    try:
        assert started.returncode == 0, f"./runMe.sh failed:\n{started.stdout}\n{started.stderr}"
        key = (root / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
        yield OnDemandStack(handle.base, key, root, run, env, handle.database)
    finally:
        stopped = handle.runme("stop", timeout=120)
        print(stopped.stdout, stopped.stderr)
        with psycopg.connect(f"{MACHINE_PG}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


def _chat(stack: OnDemandStack, model: str) -> httpx.Response:
    return httpx.post(f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.key}"},
                      json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=400)


def test_every_model_is_listed_resident_or_not(ondemand: OnDemandStack) -> None:
    resp = httpx.get(f"{ondemand.base}/v1/models", headers={"Authorization": f"Bearer {ondemand.key}"}, timeout=30)
    assert sorted(m["id"] for m in resp.json()["data"]) == ["tiny-a", "tiny-b", "tiny-broken"]
    states = {n: m["state"] for n, m in ondemand.controller()["models"].items()}
    assert states == {"tiny-a": "ready", "tiny-b": "stopped", "tiny-broken": "stopped"}


def test_alternating_requests_are_all_answered_one_swap_each(ondemand: OnDemandStack,
                                                             record_property: Any) -> None:
    before = ondemand.controller()["swaps"]
    codes = [_chat(ondemand, model).status_code for model in ("tiny-b", "tiny-a", "tiny-b")]
    after = ondemand.controller()
    assert codes == [200, 200, 200]
    assert after["swaps"] - before == 3
    assert {n: m["state"] for n, m in after["models"].items()}["tiny-b"] == "ready"
    record_property("figures", f"swap seconds (cold start of the CPU vLLM): {after['swap_seconds'][-3:]}")
    waits = _ledger_waits(ondemand, 3)
    assert len(waits) >= 3
    assert all(w > 1000 for w in waits[-3:]), waits  # each waited for a cold start (seconds)


def _ledger_waits(stack: OnDemandStack, least: int) -> list[float]:
    """The ledger's model_wait_ms of the requests that waited, oldest first (the writer flushes in batches)."""
    found: list[float] = []
    for _ in range(40):
        with psycopg.connect(stack.database) as conn:
            found = [row[0] for row in conn.execute(
                "SELECT model_wait_ms FROM confgen_usage WHERE model_wait_ms IS NOT NULL AND status = 200 ORDER BY ts")]
        if len(found) >= least:
            break
        time.sleep(0.5)
    return found


def test_a_mixed_queue_is_served_model_by_model(ondemand: OnDemandStack) -> None:
    """tiny-b is resident: its requests pass at once, the tiny-a ones wait together for one swap (AABB)."""
    before = ondemand.controller()["swaps"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=400) as client:
            async def one(model: str) -> int:
                resp = await client.post(f"{ondemand.base}/v1/chat/completions",
                                         headers={"Authorization": f"Bearer {ondemand.key}"},
                                         json={"model": model, "max_tokens": 4,
                                               "messages": [{"role": "user", "content": "hi"}]})
                return resp.status_code
            return list(await asyncio.gather(*(one(m) for m in ("tiny-a", "tiny-b", "tiny-a", "tiny-b"))))

    assert asyncio.run(burst()) == [200, 200, 200, 200]
    assert ondemand.controller()["swaps"] - before == 1


def test_a_model_that_fails_to_start_gets_503_with_the_reason(ondemand: OnDemandStack) -> None:
    resp = _chat(ondemand, "tiny-broken")
    assert resp.status_code == 503, resp.text
    assert "tiny-broken failed to start: exited with code" in resp.text
    assert resp.headers.get("retry-after")
    assert _chat(ondemand, "tiny-a").status_code == 200
    states = {n: m["state"] for n, m in ondemand.controller()["models"].items()}
    assert states["tiny-broken"] == "failed"
    assert states["tiny-a"] == "ready"


def test_status_shows_each_models_state(ondemand: OnDemandStack) -> None:
    shown = ondemand.runme("status", timeout=60)
    assert "tiny-a               ready" in shown.stdout, shown.stdout
    assert "tiny-broken          failed" in shown.stdout
    listed = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "confgen", "models", "--json"],
                            env=ondemand.env, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["models"]["tiny-broken"]["state"] == "failed"
    assert body["models"]["tiny-broken"]["error"].startswith("exited with code 1 during start-up")
    metrics = httpx.get(f"http://127.0.0.1:{CONTROLLER}/metrics", timeout=10).text
    assert 'confgen_model_state{model="tiny-a",state="ready"} 1.0' in metrics
    log = (ondemand.run / "logs" / "controller.log").read_text()
    assert "evicting tiny-a (idle" in log
    assert "to fit tiny-b" in log
