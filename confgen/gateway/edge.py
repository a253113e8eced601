"""Request hygiene at the gateway's edge, as an ASGI wrapper around the whole LiteLLM app: a body size limit
(413), a header size limit (431), a limit on how long a request body may stall (408), JSON bodies that
LiteLLM's auth cannot take (400), and the LiteLLM routes this stack cannot serve (404).

LiteLLM 1.108.7 reads a JSON body before any auth runs and trips over what a client can send
(tests/e2e/test_security_routes.py found each): a body that is JSON but not an object is a 500 in
`pre_db_read_auth_checks` (litellm/proxy/auth/auth_checks.py, `request_data.get(...)`), with or without a
key; a client's `litellm_logging_obj` is taken for LiteLLM's own logging object when a refusal is logged
(litellm/proxy/utils.py, `_handle_logging_proxy_only_error`), a 500 instead of the 401/403. So a body
LiteLLM parses as JSON (litellm/proxy/common_utils/http_parsing_utils.py `read_request_body`: every
content type but form data and protobuf) is read whole here and parsed once to check its shape; a body
that is not JSON at all is left to LiteLLM's parser, which answers 400 (or repairs lone surrogates).

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
from typing import Any, Final

import orjson

from confgen.gateway import proxyinfo
from confgen.gateway.config import EdgeLimits

log = logging.getLogger("confgen.gateway")
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DISCONNECT: Message = {"type": "http.disconnect"}
DRAIN_S = 5.0  # the longest a refused body is read on, so its sender reads the 413 rather than a reset
# Content types LiteLLM does not parse as JSON (http_parsing_utils.py: _FORM_CONTENT_TYPES, _BINARY_CONTENT_TYPES).
NOT_JSON: Final = frozenset({"multipart/form-data", "application/x-www-form-urlencoded", "application/x-protobuf",
                             "application/protobuf"})
# Body fields a client may not send -> why. `litellm_logging_obj` is set by LiteLLM itself for each request
# (litellm/proxy/utils.py); `guardrails` names LiteLLM guardrails to apply, and this stack configures none
# (confgen/templates): LiteLLM echoes the names in the x-litellm-applied-guardrails response header, where a
# name outside latin-1 was a 500 (litellm/proxy/common_utils/callback_utils.py; found by the master-key fuzz).
RESERVED_FIELDS: Final[dict[str, str]] = {
    "litellm_logging_obj": "a field the gateway sets itself for each request",
    "guardrails": "LiteLLM guardrails, and this gateway configures none",
}
_NEEDS_DATABASE: Final = "needs LiteLLM's own database (Prisma), which this stack does not run"
# Routes LiteLLM mounts that this stack cannot serve and that fail (500/503) before any auth runs, for
# anyone: path, or prefix ending in "/" -> why. Answered 404 here, for every caller.
NOT_SERVED: Final[dict[str, str]] = {
    "/langfuse/": "LiteLLM's Langfuse pass-through (no Langfuse is configured; it decodes the Authorization "
                  "header as Basic credentials before any auth)",
    "/vertex_ai/discovery/": "LiteLLM's Vertex AI discovery pass-through (no Google project is configured; it "
                             "builds its upstream URL from the path before any auth)",
    "/public/skill_hub": _NEEDS_DATABASE,
    "/get/ui_settings": _NEEDS_DATABASE,
    "/claude-code/marketplace.json": _NEEDS_DATABASE,
    "/toolset/": f"LiteLLM's MCP toolsets: it {_NEEDS_DATABASE}",
}


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
        path: str = scope.get("path") or ""
        why = not_served(path)
        if why is not None:
            await _refuse(scope, send, 404, "not_found", f"{path[:120]!r} is not served by this gateway: {why}",
                          drain=receive, limit=self.limits.max_body_bytes)
            return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:
            # A client that waits for "100 Continue" sends no body: nothing to drain.
            waits = headers.get(b"expect", b"").lower() == b"100-continue"
            await _refuse(scope, send, 413, "request_too_large", _too_large(self.limits),
                          drain=None if waits else receive, limit=self.limits.max_body_bytes)
            return
        await _Cycle(self.limits, scope, receive, send, json_body=_parsed_as_json(headers)).run(self.app)


def not_served(path: str) -> str | None:
    """Why this stack cannot serve `path`, or None."""
    for entry, why in NOT_SERVED.items():
        if path == entry or path.rstrip("/") == entry or (entry.endswith("/") and path.startswith(entry)):
            return why
    return None


def _parsed_as_json(headers: dict[bytes, bytes]) -> bool:
    media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower().decode("latin-1")
    return media not in NOT_JSON


def json_problem(body: bytes) -> str | None:
    """What LiteLLM's auth would trip over in this JSON body, or None (also for a body that is not JSON)."""
    if not body.strip(b" \t\r\n"):
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # LiteLLM's own parser answers it
    if not isinstance(value, dict):
        return f"the request body must be a JSON object ({{...}}), not a JSON {_json_kind(value)}"
    reserved = sorted(RESERVED_FIELDS.keys() & value.keys())
    if reserved:
        return "the request body holds " + "; ".join(f"{name!r}: {RESERVED_FIELDS[name]}" for name in reserved) + (
            ": remove it" if len(reserved) == 1 else ": remove them")
    return None


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _too_large(limits: EdgeLimits) -> str:
    return f"request body larger than {limits.max_body_bytes} bytes"


class _Cycle:
    """One request: the body counted and timed as the app reads it; a refusal is answered here."""

    def __init__(self, limits: EdgeLimits, scope: dict[str, Any], receive: Receive, send: Send, *,
                 json_body: bool) -> None:
        self.limits = limits
        self.json_body = json_body  # read whole and checked before the app sees it (json_problem)
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
        if not self.json_body:
            return await self._next()
        parts: list[bytes] = []
        while not self.body_done:
            message = await self._next()
            if message["type"] != "http.request":
                return message  # the client left (or the body was refused)
            parts.append(message.get("body", b""))
        body = b"".join(parts)
        problem = json_problem(body)
        if problem is not None:
            return await self._refuse(400, "invalid_request_error", problem)
        return {"type": "http.request", "body": body, "more_body": False}

    async def _next(self) -> Message:
        """The next message from the client, counted and timed."""
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
