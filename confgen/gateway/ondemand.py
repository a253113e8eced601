"""Hold a request for an on-demand model that is not ready, ask this host's controller to make it ready,
and let it through when it is (confgen/controller/). Read from CONFGEN_ONDEMAND, the file the launcher
writes (confgen.controller.plan.gateway_view); without it every model is served as before.

A ready model costs one dict lookup: each gateway process refreshes every model's state from the
controller in the background (REFRESH_S), and the controller drains a model for longer than that before
it leaves memory. Waiters for one model and priority share one ensure-ready call, which carries the key's
priority; the controller serves the calls model by model, the best priority first. A model that is not ready
within its load_timeout_s gets 503 with Retry-After. The master key's GET /health shows each model's state
(`confgen_on_demand`, added by OnDemandHealth to LiteLLM's answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from confgen.gateway import proxyinfo
from confgen.gateway.rejection import KeyRejected

ENV = "CONFGEN_ONDEMAND"
REFRESH_S = 0.5
log = logging.getLogger("confgen")


@dataclass
class Gate:
    controller: str
    token: str
    models: dict[str, dict[str, Any]]  # served name -> {"name", "load_timeout_s"}
    states: dict[str, str] = field(default_factory=dict)  # served name -> state, as last refreshed
    _pending: dict[tuple[str, int], asyncio.Task[tuple[bool, str, int]]] = field(default_factory=dict)
    _refresher: asyncio.Task[None] | None = None
    _client: httpx.AsyncClient | None = None

    @classmethod
    def from_file(cls, path: Path) -> Gate:
        view = json.loads(path.read_text(encoding="utf-8"))
        token = Path(view["token_file"]).read_text(encoding="utf-8").strip()
        return cls(view["controller"], token, view["models"])

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            auth = {"Authorization": f"Bearer {self.token}"}
            self._client = httpx.AsyncClient(base_url=self.controller, headers=auth)
        return self._client

    async def hold(self, model: str, *, prefix: str | None = None, alias: str | None = None,
                   priority: int = 0) -> float | None:
        """Return when `model` is ready: None at once when it is (or is not on demand), else the milliseconds
        it waited; KeyRejected 503 when it does not become ready. `priority`: the key's (lower first)."""
        if self.states.get(model) == "ready" or model not in self.models:
            return None
        started = time.monotonic()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_loop())
        task = self._pending.get((model, priority))
        if task is None or task.done():
            task = self._pending[(model, priority)] = asyncio.create_task(self._ensure(model, priority))
        ok, message, retry_after = await asyncio.shield(task)
        if not ok:
            raise KeyRejected(503, "model_not_ready", message, prefix=prefix, alias=alias, retry_after_s=retry_after)
        return (time.monotonic() - started) * 1000

    async def _ensure(self, model: str, priority: int = 0) -> tuple[bool, str, int]:
        name, timeout = self.models[model]["name"], float(self.models[model]["load_timeout_s"])
        try:
            resp = await self.client.post(f"/models/{name}/ensure-ready",
                                          params={"timeout": timeout, "priority": priority}, timeout=timeout + 10)
        except httpx.HTTPError as exc:
            return False, f"{model} is on demand and the model controller is unreachable ({exc}); retry shortly", 10
        if resp.status_code == 200:
            self.states[model] = "ready"
            return True, "", 0
        try:
            body = resp.json()
        except ValueError:
            body = {}
        return (False, str(body.get("error") or f"{model}: controller answered HTTP {resp.status_code}"),
                int(body.get("retry_after_s") or 10))

    async def health(self) -> dict[str, Any]:
        """What GET /health adds: each on-demand model's state, read from the controller now (a /health call is
        rare and already costs LiteLLM's own checks; requests use the refreshed states)."""
        try:
            resp = await self.client.get("/status", timeout=5)
            resp.raise_for_status()
            models = resp.json()["models"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return {"controller": self.controller, "error": f"the model controller did not answer: {exc}",
                    "models": {m: {"state": self.states.get(m, "unknown")} for m in self.models}}
        return {"controller": self.controller, "models": {
            m["served_name"]: {"state": m["state"], "level": m.get("level"), "for_s": m.get("for_s"),
                               "error": m.get("error") or None} for m in models.values()}}

    async def _refresh_loop(self) -> None:
        while True:
            try:
                resp = await self.client.get("/status", timeout=5)
                if resp.status_code == 200:
                    models = resp.json()["models"]
                    self.states = {m["served_name"]: m["state"] for m in models.values()}
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("on-demand: controller status unavailable: %s", exc)
            await asyncio.sleep(REFRESH_S)


_gate: Gate | None = None
_read = False


def gate() -> Gate | None:
    """This process's gate, or None when the deployment has no on-demand models."""
    global _gate, _read  # noqa: PLW0603 - one per gateway process, read once
    if not _read:
        _read = True
        path = os.environ.get(ENV)
        _gate = Gate.from_file(Path(path)) if path else None
    return _gate


class OnDemandHealth:
    """Adds `confgen_on_demand` (Gate.health) to LiteLLM's GET /health answer: a JSON object answered 200, that
    is to the master key (custom_auth refuses the rest, and refusals pass as they are)."""

    def __init__(self, app: ASGIApp, note: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.app, self.note = app, note

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("path") != "/health":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        parts: list[bytes] = []

        async def noted(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message.get("status") == 200:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(parts)
            try:
                answer = orjson.loads(body)
            except orjson.JSONDecodeError:
                answer = None
            if isinstance(answer, dict):
                body = orjson.dumps({**answer, "confgen_on_demand": await self.note()})
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, noted)


def install() -> bool:
    """Put OnDemandHealth around LiteLLM's app (innermost: call before lane.install); False without on-demand
    models or outside the proxy."""
    found = gate()
    app = getattr(sys.modules.get(proxyinfo.PROXY_MODULE), "app", None)
    if found is None or app is None:
        return False
    if app.middleware_stack is None:
        if not any(m.cls is OnDemandHealth for m in app.user_middleware):
            app.add_middleware(OnDemandHealth, note=found.health)
    elif not isinstance(app.middleware_stack, OnDemandHealth):
        app.middleware_stack = OnDemandHealth(app.middleware_stack, found.health)
    return True
