"""The gateway's hold for on-demand models (confgen/gateway/ondemand.py) against a stand-in controller."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from confgen.gateway.ondemand import Gate
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
