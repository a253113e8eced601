"""The gateway's hold for on-demand models (confgen/gateway/ondemand.py) against a stand-in controller."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from confgen.gateway.ondemand import Gate, OnDemandHealth
from confgen.gateway.rejection import KeyRejected

MODELS = {"a": {"name": "a", "load_timeout_s": 5}, "b": {"name": "b", "load_timeout_s": 5}}


def _gate(answer: httpx.Response, calls: list[str]) -> Gate:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            return httpx.Response(200, json={"models": {}})
        calls.append(request.url.path)
        await asyncio.sleep(0.05)
        return answer

    gate = Gate("http://127.0.0.1:1", "t", MODELS)
    gate._client = httpx.AsyncClient(base_url=gate.controller, transport=httpx.MockTransport(handle))
    return gate


def test_a_ready_model_costs_no_controller_call() -> None:
    calls: list[str] = []
    gate = _gate(httpx.Response(200, json={}), calls)
    gate.states["a"] = "ready"
    asyncio.run(gate.hold("a"))
    asyncio.run(gate.hold("not-on-demand"))
    assert calls == []


def test_waiters_for_one_model_share_one_ensure_ready_call() -> None:
    calls: list[str] = []
    gate = _gate(httpx.Response(200, json={"state": "ready"}), calls)

    async def many() -> None:
        await asyncio.gather(*(gate.hold("a") for _ in range(5)))

    asyncio.run(many())
    assert calls == ["/models/a/ensure-ready"]
    assert gate.states["a"] == "ready"


def test_a_model_that_cannot_load_is_503_with_retry_after_and_the_reason() -> None:
    body = {"error": "b failed to start: exited with code 1 during start-up", "retry_after_s": 30}
    gate = _gate(httpx.Response(503, content=json.dumps(body)), [])
    with pytest.raises(KeyRejected) as refused:
        asyncio.run(gate.hold("b", alias="alice"))
    assert refused.value.status == 503
    assert refused.value.message == body["error"]
    assert refused.value.headers == {"retry-after": "30"}


def test_the_keys_priority_goes_with_ensure_ready_and_priorities_do_not_share_a_call() -> None:
    seen: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.get("priority", ""))
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={})

    gate = Gate("http://127.0.0.1:1", "t", MODELS)
    gate._client = httpx.AsyncClient(base_url=gate.controller, transport=httpx.MockTransport(handle))
    async def both() -> None:
        gate._refresher = asyncio.get_running_loop().create_future()  # no background refresh in this test
        await asyncio.gather(gate.hold("a", priority=-2), gate.hold("a", priority=-2), gate.hold("a", priority=7))

    asyncio.run(both())
    assert sorted(seen) == ["-2", "7"]


def _health_app(status: int, body: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def _get(app: Any, path: str = "/health") -> tuple[int, dict[str, Any]]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    length = dict(sent[0]["headers"])[b"content-length"]
    assert int(length) == len(body)
    return sent[0]["status"], json.loads(body)


def test_health_shows_each_on_demand_models_state() -> None:
    status = {"models": {"a": {"served_name": "a", "state": "ready", "level": None, "for_s": 3.0, "error": ""},
                         "b": {"served_name": "b", "state": "failed", "level": None, "for_s": 1.0,
                               "error": "exited with code 1"}}}
    gate = Gate("http://127.0.0.1:1", "t", MODELS)
    gate._client = httpx.AsyncClient(base_url=gate.controller,
                                     transport=httpx.MockTransport(lambda r: httpx.Response(200, json=status)))
    code, body = _get(OnDemandHealth(_health_app(200, b'{"healthy_count": 1}'), gate.health))
    assert code == 200
    assert body == {"healthy_count": 1, "confgen_on_demand": {"controller": "http://127.0.0.1:1", "models": {
        "a": {"state": "ready", "level": None, "for_s": 3.0, "error": None},
        "b": {"state": "failed", "level": None, "for_s": 1.0, "error": "exited with code 1"}}}}


def test_health_says_when_the_controller_does_not_answer_and_refusals_pass() -> None:
    gate = Gate("http://127.0.0.1:1", "t", MODELS)
    gate._client = httpx.AsyncClient(base_url=gate.controller,
                                     transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    _, body = _get(OnDemandHealth(_health_app(200, b"{}"), gate.health))
    note = body["confgen_on_demand"]
    assert note["error"].startswith("the model controller did not answer: Server error '500 Internal Server Error'")
    assert note["models"] == {"a": {"state": "unknown"}, "b": {"state": "unknown"}}
    assert _get(OnDemandHealth(_health_app(401, b'{"error": "no"}'), gate.health)) == (401, {"error": "no"})
    assert _get(OnDemandHealth(_health_app(200, b'{"x": 1}'), gate.health), "/v1/models") == (200, {"x": 1})
