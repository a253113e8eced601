"""The on-demand controller (confgen/controller/) against SIMULATED vLLMs (confgen.sim with its sleep API and
faults): sleep/wake, wake failure -> cold restart with the waiting request answered, TTL, pin, LRU among idle
models, a model with a request in flight is not evicted, priorities reorder the queue of loads. The real CPU
vLLM swap is test_ondemand_vllm.py.

One controller (in this process, its real HTTP API on 127.0.0.1:15720) and four simulator processes
(15700-15703) for the module; about 45 s.
"""

from __future__ import annotations

import os
import re
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
from confgen.runtime.runner import ServerSpec

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PORT = 15720
TOKEN = "h17-test-token"
SIM_PORTS = {"p": 15700, "a": 15701, "b": 15702, "c": 15703}


def _plan() -> OnDemandPlan:
    # Each model takes 30 of 100 hundredths awake and 5 asleep: the pinned p and two others stay awake.
    gpu = Gpu("test-100", GpuProfile(description="test", memory_gb=100, ceiling=1.0, swap="sleep-1"), "test")
    settings = {"p": OnDemandModel(pin=True), "a": OnDemandModel(preload=True), "b": OnDemandModel(),
                "c": OnDemandModel(ttl=4), "x": OnDemandModel()}
    members = {n: Member(n, n, "gpu", 30, 5, 30.0, 5.0, s) for n, s in settings.items()}
    return OnDemandPlan(gpu, "sleep-1", "test profile", 5.0, PORT, 100, members)


def _spec(name: str, logs: Path) -> ServerSpec:
    if name == "x":  # a server that cannot start
        argv = [sys.executable, "-c", "import sys; print('ValueError: no weights at /nowhere'); sys.exit(1)"]
        return ServerSpec("broken-x", argv, dict(os.environ), ROOT, logs / "x.log", "http://127.0.0.1:15704")
    port = SIM_PORTS[name]
    argv = [sys.executable, "-m", "confgen.sim", "--served-model-name", name, "--port", str(port),
            "--enable-sleep-mode", "--startup-s", "1", "--sleep-s", "0.2", "--wake-s", "0.3", "--itl-ms", "20",
            "--output-tokens", "400"]
    return ServerSpec(f"sim-{name}", argv, dict(os.environ), ROOT, logs / f"sim-{name}.log", f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    logs = tmp_path_factory.mktemp("ondemand-sim")
    ctl = Controller(_plan(), {n: _spec(n, logs) for n in [*SIM_PORTS, "x"]}, poll_s=0.5, drain_s=0.6)
    server = uvicorn.Server(uvicorn.Config(app(ctl, TOKEN), host="127.0.0.1", port=PORT, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: _status()["models"]["a"]["state"] == "ready", 30)
        yield ctl
    finally:
        server.should_exit = True
        thread.join(30)


def _api(method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{PORT}{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=60, **kwargs)


def _status() -> dict[str, Any]:
    result: dict[str, Any] = _api("GET", "/status").json()
    return result


def _states() -> dict[str, str]:
    return {n: m["state"] for n, m in _status()["models"].items()}


def _wait(check: Any, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not true after {timeout_s} s: {_states()}")


def test_the_api_needs_the_token(controller: Controller) -> None:
    assert httpx.get(f"http://127.0.0.1:{PORT}/status", timeout=5).status_code == 401
    assert httpx.get(f"http://127.0.0.1:{PORT}/health", timeout=5).status_code == 200
    assert _api("POST", "/models/nope/ensure-ready").status_code == 404


def test_preload_and_pin_at_start(controller: Controller) -> None:
    assert _states() == {"p": "ready", "a": "ready", "b": "stopped", "c": "stopped", "x": "stopped"}


def test_lru_idle_model_sleeps_to_fit_another(controller: Controller) -> None:
    assert _api("POST", "/models/b/ensure-ready").status_code == 200  # p + a + b = 90: fits
    assert _api("POST", "/models/c/ensure-ready").status_code == 200  # a is the least recently used
    assert _states() == {"p": "ready", "a": "sleeping", "b": "ready", "c": "ready", "x": "stopped"}
    assert httpx.get(f"http://127.0.0.1:{SIM_PORTS['a']}/is_sleeping", timeout=5).json() == {"is_sleeping": True}
    assert any(e.startswith("sleeping a at level 1 (idle") and e.endswith("to fit c: 95 of 100 GB")
               for e in controller.events), controller.events


def test_a_busy_model_is_not_evicted_and_waking_keeps_the_process(controller: Controller) -> None:
    pid = controller.slots["a"].handle.pid  # type: ignore[union-attr]
    # b, used most recently by c's load order, is busy with a long answer; c is idle: c sleeps, not b.
    _api("POST", "/models/c/ensure-ready")
    time.sleep(1.2)
    done: list[int] = []

    def long_request() -> None:
        resp = httpx.post(f"http://127.0.0.1:{SIM_PORTS['b']}/v1/chat/completions", timeout=30,
                          json={"model": "b", "max_tokens": 200, "messages": [{"role": "user", "content": "x"}]})
        done.append(resp.status_code)

    worker = threading.Thread(target=long_request)
    worker.start()
    _wait(lambda: controller.slots["b"].in_flight > 0, 5)
    assert _api("POST", "/models/a/ensure-ready").status_code == 200
    worker.join(30)
    assert done == [200]
    assert _states() == {"p": "ready", "a": "ready", "b": "ready", "c": "sleeping", "x": "stopped"}
    assert controller.slots["a"].handle.pid == pid  # type: ignore[union-attr]  # woken, not restarted


def test_wake_failure_restarts_cold_and_the_request_is_answered(controller: Controller) -> None:
    sleeping = controller.slots["c"]
    old_pid = sleeping.handle.pid  # type: ignore[union-attr]
    httpx.post(f"{sleeping.spec.url}/sim/faults", json={"wake_kills": True}, timeout=5).raise_for_status()
    resp = _api("POST", "/models/c/ensure-ready")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "ready"
    assert controller.slots["c"].handle.pid != old_pid  # type: ignore[union-attr]
    assert "c failed to wake: restarting it cold" in controller.events
    assert _states()["p"] == "ready"


def test_ttl_expiry_puts_an_idle_model_to_sleep(controller: Controller) -> None:
    _api("POST", "/models/c/ensure-ready")
    _wait(lambda: _states()["c"] == "sleeping", 15)  # ttl 4 s
    assert any(e.startswith("sleeping c at level 1") and "ttl 4 s expired" in e for e in controller.events)


def test_a_load_that_needs_busy_models_is_refused_after_the_bound(controller: Controller) -> None:
    """a and b both answer long requests; c fits only if one of them leaves: refused after in_flight_wait_s."""
    _api("POST", "/models/a/ensure-ready")
    _api("POST", "/models/b/ensure-ready")
    assert _states()["c"] == "sleeping"
    done: list[int] = []

    def long_request(name: str) -> None:
        resp = httpx.post(f"http://127.0.0.1:{SIM_PORTS[name]}/v1/chat/completions", timeout=30,
                          json={"model": name, "max_tokens": 400, "messages": [{"role": "user", "content": "x"}]})
        done.append(resp.status_code)

    workers = [threading.Thread(target=long_request, args=(n,)) for n in ("a", "b")]
    for worker in workers:
        worker.start()
    _wait(lambda: controller.slots["a"].in_flight > 0 and controller.slots["b"].in_flight > 0, 5)
    started = time.monotonic()
    resp = _api("POST", "/models/c/ensure-ready")
    assert resp.status_code == 503
    assert 5 <= time.monotonic() - started < 8
    assert re.fullmatch(r"cannot load c \(30.0 GB\): [ab] still had requests in flight after 5 s and the budget "
                        r"\(100.0 GB on test-100\) holds no more; retry when they finish", resp.json()["error"])
    assert resp.headers["retry-after"] == "30"
    for worker in workers:
        worker.join(30)
    assert done == [200, 200]
    assert _states() == {"p": "ready", "a": "ready", "b": "ready", "c": "sleeping", "x": "stopped"}


def test_prometheus_shows_states_and_swaps(controller: Controller) -> None:
    text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=5).text
    assert 'confgen_model_state{model="p",state="ready"} 1.0' in text
    assert 'confgen_model_state{model="c",state="sleeping"} 1.0' in text
    assert f"confgen_model_swaps_total {float(controller.swaps)}" in text
    assert f"confgen_model_swap_seconds_count {float(len(controller.swap_seconds))}" in text


def test_a_model_that_fails_to_start_says_why_and_is_not_retried_at_once(controller: Controller) -> None:
    first = _api("POST", "/models/x/ensure-ready")
    assert first.status_code == 503
    assert first.json()["error"].startswith("x failed to start: exited with code 1 during start-up: "
                                            "ValueError: no weights at /nowhere (log: ")
    events = len(controller.events)
    again = _api("POST", "/models/x/ensure-ready")
    assert again.status_code == 503
    assert re.fullmatch(r"x failed to start \d+ s ago: exited with code 1 .*; next try in \d+ s", again.json()["error"])
    assert len(controller.events) == events  # nothing evicted for it the second time
    assert _api("POST", "/models/p/ensure-ready").status_code == 200


def test_pinned_model_never_left(controller: Controller) -> None:
    assert not any(" p " in f" {e} " and ("sleeping p" in e or "evicting p" in e) for e in controller.events)
    assert _status()["swaps"] >= 4


def test_priorities_reorder_the_queue_of_loads(controller: Controller) -> None:
    """While a loads, b (priority 10) and then c (priority -5) queue: c is loaded before b, asked first."""
    for name in ("a", "b", "c"):
        _api("POST", f"/models/{name}/stop").raise_for_status()
    mark = len(controller.events)
    answers: dict[str, int] = {}

    def ask(name: str, rank: int) -> None:
        answers[name] = _api("POST", f"/models/{name}/ensure-ready", params={"priority": rank}).status_code

    threads = {n: threading.Thread(target=ask, args=(n, r)) for n, r in (("a", 0), ("b", 10), ("c", -5))}
    threads["a"].start()
    _wait(lambda: _states()["a"] == "starting", 10)
    threads["b"].start()
    _wait(lambda: len(_status()["queue"]) == 1, 5)
    threads["c"].start()
    _wait(lambda: len(_status()["queue"]) == 2, 5)
    assert _status()["queue"] == [{"model": "c", "priority": -5, "waiting": 1},
                                  {"model": "b", "priority": 10, "waiting": 1}]
    for thread in threads.values():
        thread.join(60)
    assert answers == {"a": 200, "b": 200, "c": 200}
    ready = [e.split()[0] for e in controller.events[mark:] if " ready after " in e]
    assert ready == ["a", "c", "b"], controller.events[mark:]
