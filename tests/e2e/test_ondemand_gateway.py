"""Priorities and states through the REAL LiteLLM gateway (issue 17): an API key's priority reaches the backend as
the request's `priority` on a model marked for --scheduling-policy priority (through the relay lane and
through LiteLLM's own path), not on another model, and replaces the client's; the master key's GET /health
shows each on-demand model's state from the controller.

Backends: a recording stand-in for vLLM (127.0.0.1:15650, it keeps each request body) for the priority checks,
and one SIMULATED vLLM (15651) owned by an on-demand controller in this process (15652). Gateways: 15655
(relay lane on) and 15656 (lane off), with a scratch database `h17b_*` on the machine's PostgreSQL.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from confgen.controller.api import app
from confgen.controller.core import Controller
from confgen.controller.plan import Member, OnDemandPlan
from confgen.gateway.priority import MARK
from confgen.plan import Gpu, GpuProfile
from confgen.routing.schema import OnDemandModel
from confgen.runtime.runner import ServerSpec
from tests.e2e.keys_support import (
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    redis_namespace,
    render_config,
    scratch_database,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RECORDER, SIM, CONTROLLER, LANE_ON, LANE_OFF = 15650, 15651, 15652, 15655, 15656
TOKEN = "h17b-gateway-token"
BODIES: list[dict[str, Any]] = []


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        BODIES.append(body)
        answer = json.dumps({"id": "r", "object": "chat.completion", "created": 1, "model": body.get("model"),
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Stack:
    key: str
    gateways: dict[str, Gateway]
    controller: Controller


def _config(folder: Path) -> Path:
    path = render_config(folder, RECORDER, {"prio": RECORDER, "od": SIM})
    doc = yaml.safe_load(path.read_text())
    for deployment in doc["model_list"]:
        if deployment["model_name"] == "prio":  # as the template marks a model run with --scheduling-policy priority
            deployment["model_info"][MARK] = True
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("ondemand-gateway")
    recorder = ThreadingHTTPServer(("127.0.0.1", RECORDER), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    gpu = Gpu("t", GpuProfile(description="t", memory_gb=100, ceiling=1.0, swap="stop"), "t")
    plan = OnDemandPlan(gpu, "stop", "t", 5.0, CONTROLLER, 100,
                        {"od": Member("od", "od", "gpu", 50, 0, 50.0, 0.0, OnDemandModel(load_timeout_s=30))})
    argv = [sys.executable, "-m", "confgen.sim", "--served-model-name", "od", "--port", str(SIM), "--output-tokens",
            "4"]
    spec = ServerSpec("sim-od", argv, {"VLLM_API_KEY": VLLM_KEY, "PATH": "/usr/bin:/bin"}, ROOT, folder / "od.log",
                      f"http://127.0.0.1:{SIM}")
    controller = Controller(plan, {"od": spec}, poll_s=0.5, drain_s=0.6, api_key=VLLM_KEY)
    server = uvicorn.Server(uvicorn.Config(app(controller, TOKEN), host="127.0.0.1", port=CONTROLLER,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    (folder / "token").write_text(TOKEN + "\n")
    view = folder / "ondemand.json"
    view.write_text(json.dumps({"controller": f"http://127.0.0.1:{CONTROLLER}", "token_file": str(folder / "token"),
                                "models": {"od": {"name": "od", "load_timeout_s": 30}}}))
    config = _config(folder / "generated")
    try:
        with scratch_database(prefix="h17b_") as url, redis_namespace() as namespace:
            gateways: dict[str, Gateway] = {
                "lane": Gateway(LANE_ON, config, folder / "lane", url, namespace,
                                extra_env={"CONFGEN_ONDEMAND": str(view)}),
                "litellm": Gateway(LANE_OFF, config, folder / "litellm", url, namespace,
                                   extra_env={"CONFGEN_ONDEMAND": str(view), "CONFGEN_RELAY_LANE": "off"})}
            try:
                for gateway in gateways.values():
                    gateway.spawn()
                for gateway in gateways.values():
                    gateway.wait_healthy()
                key = create_key(url, "--alias", "batch", "--priority", "7")["key"]
                yield Stack(key, gateways, controller)
            finally:
                for gateway in gateways.values():
                    gateway.stop()
    finally:
        server.should_exit = True
        recorder.shutdown()


def _chat(gateway: Gateway, key: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **extra})


@pytest.mark.parametrize("path", ["lane", "litellm"])
def test_the_keys_priority_reaches_a_priority_scheduled_model_only(stack: Stack, path: str) -> None:
    gateway = stack.gateways[path]
    BODIES.clear()
    assert _chat(gateway, stack.key, "prio", priority=-100).status_code == 200
    assert _chat(gateway, stack.key, MODEL).status_code == 200
    assert _chat(gateway, MASTER_KEY, "prio", priority=3).status_code == 200
    sent = {(b["model"], b.get("priority")) for b in BODIES}
    assert sent == {("prio", 7), (MODEL, None), ("prio", 3)}, BODIES


def test_health_shows_the_on_demand_states(stack: Stack) -> None:
    gateway = stack.gateways["lane"]

    def states() -> dict[str, Any]:
        resp = httpx.get(f"{gateway.url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=120)
        assert resp.status_code == 200, resp.text
        note: dict[str, Any] = resp.json()["confgen_on_demand"]
        return note

    before = states()
    assert before["controller"] == f"http://127.0.0.1:{CONTROLLER}"
    assert before["models"]["od"]["state"] == "stopped"
    assert _chat(gateway, stack.key, "od").status_code == 200  # held while the controller starts it
    assert states()["models"]["od"]["state"] == "ready"
    assert httpx.get(f"{gateway.url}/health", headers={"Authorization": f"Bearer {stack.key}"},
                     timeout=30).status_code == 403
