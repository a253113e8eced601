"""Request hygiene at the gateway's edge: a body size limit (413), a header size limit (431) and a limit on
how long a request body may stall (408), as an ASGI wrapper around the whole LiteLLM app.

LiteLLM 1.108.7 has `general_settings.max_request_size_mb`, but enforces it only for premium users
(litellm/proxy/proxy_server.py: `is_request_size_limit_enabled=lambda: premium_user is True`, and
auth_utils.check_if_request_size_is_safe, which otherwise logs a warning on every request). The uvicorn it
runs parses with httptools, which caps neither the header size nor the time a request takes to arrive
(measured: a 40 MB body, 2 MB of headers and a body that never comes are all accepted or waited on).

The guard answers a refused request itself and then tells the app the client is gone (http.disconnect),
dropping whatever the app still sends: so the answer does not depend on how LiteLLM handles a body it
could not read. Before a 413 ends the connection, the rest of the body is read and dropped for a few
seconds (as nginx's lingering close): a client still sending would otherwise get a connection reset
instead of the answer. What only the HTTP server sees is out of its reach: headers are checked once uvicorn has
read all of them (it holds them in memory first), and a request head that never ends or a connection
that sends nothing is not cut off; nginx in front (confgen nginx) bounds both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from confgen.gateway import proxyinfo

log = logging.getLogger("confgen.gateway")
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DISCONNECT: Message = {"type": "http.disconnect"}
DRAIN_S = 5.0  # the longest a refused body is read on, so its sender reads the 413 rather than a reset


@dataclass(frozen=True)
class EdgeLimits:
    max_body_bytes: int = 32 * 1024 * 1024  # as nginx's client_max_body_size (confgen/render/nginx.py)
    max_header_bytes: int = 32 * 1024  # request line + headers; nginx's default is 4 buffers of 8 KiB
    body_timeout_s: float = 30.0  # the longest silence while a body arrives (nginx client_body_timeout: 60 s)

    def describe(self) -> str:
        return (f"bodies up to {self.max_body_bytes / 2**20:g} MiB, headers up to {self.max_header_bytes / 1024:g} "
                f"KiB, a body may stall {self.body_timeout_s:g} s")


def _answer(status: int, kind: str, message: str) -> tuple[Message, Message]:
    """The response start and its whole body, left open (more_body): `_refuse` ends it."""
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": str(status)}}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body, "more_body": True}


async def _refuse(scope: dict[str, Any], send: Send, status: int, kind: str, message: str, *,
                  drain: Receive | None = None, limit: int = 0) -> None:
    """Answer, then (with `drain`) read and drop up to `limit` more bytes of the body, for DRAIN_S at most.
    Logged here: uvicorn's access log is off (confgen/runtime/gateway_tuning.py)."""
    client = scope.get("client") or ("?", 0)
    log.warning("refused %s %s from %s: %d, %s", scope.get("method"), scope.get("path"), client[0], status, message)
    for part in _answer(status, kind, message):
        await send(part)
    if drain is not None:
        await _drain(drain, limit)
    await send({"type": "http.response.body", "body": b"", "more_body": False})  # uvicorn closes the connection


async def _drain(receive: Receive, limit: int) -> None:
    loop = asyncio.get_running_loop()
    end, drained = loop.time() + DRAIN_S, 0
    while drained <= limit and (left := end - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))


class EdgeGuard:
    def __init__(self, app: Any, limits: EdgeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers") or [])  # "name: value\r\n"
        if size > self.limits.max_header_bytes:
            await _refuse(scope, send, 431, "request_header_fields_too_large", f"request line and headers are {size} "
                          f"bytes, more than the {self.limits.max_header_bytes} allowed")
            return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:
            # A client that waits for "100 Continue" sends no body: nothing to drain.
            waits = headers.get(b"expect", b"").lower() == b"100-continue"
            await _refuse(scope, send, 413, "request_too_large", _too_large(self.limits),
                          drain=None if waits else receive, limit=self.limits.max_body_bytes)
            return
        await _Cycle(self.limits, scope, receive, send).run(self.app)


def _too_large(limits: EdgeLimits) -> str:
    return f"request body larger than {limits.max_body_bytes} bytes"


class _Cycle:
    """One request: the body counted and timed as the app reads it; a refusal is answered here."""

    def __init__(self, limits: EdgeLimits, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.limits = limits
        self.scope = scope
        self._receive = receive
        self._send = send
        self.received = 0
        self.body_done = False
        self.started = False  # the app's answer has begun: too late to answer for it
        self.refused = False

    async def run(self, app: Any) -> None:
        await app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return DISCONNECT
        if self.body_done:
            return await self._receive()  # e.g. a streaming answer listening for the client to leave
        try:
            message = await asyncio.wait_for(self._receive(), self.limits.body_timeout_s)
        except TimeoutError:
            return await self._refuse(408, "request_timeout",
                                      f"the request body stalled for more than {self.limits.body_timeout_s:g} s")
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limits.max_body_bytes:
                return await self._refuse(413, "request_too_large", _too_large(self.limits), drain=True)
            self.body_done = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the app's answer to a request already refused
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _refuse(self, status: int, kind: str, text: str, *, drain: bool = False) -> Message:
        self.refused = True
        if not self.started:
            await _refuse(self.scope, self._send, status, kind, text, drain=self._receive if drain else None,
                          limit=self.limits.max_body_bytes)
        return DISCONNECT


def install(limits: EdgeLimits) -> bool:
    """Wrap the LiteLLM proxy's app (outermost, around its own middleware); once. False outside the proxy."""
    proxy = sys.modules.get(proxyinfo.PROXY_MODULE)
    app = getattr(proxy, "app", None)
    if app is None:
        return False
    if app.middleware_stack is None:  # not started yet: a middleware like any other, outermost
        if not any(m.cls is EdgeGuard for m in app.user_middleware):
            app.add_middleware(EdgeGuard, limits=limits)
    elif not isinstance(app.middleware_stack, EdgeGuard):
        # Started (our callback loads during LiteLLM's start-up): Starlette refuses add_middleware now, so
        # the stack it built is wrapped (starlette/applications.py: __call__ runs self.middleware_stack).
        app.middleware_stack = EdgeGuard(app.middleware_stack, limits)
    log.info("request limits: %s", limits.describe())
    return True
