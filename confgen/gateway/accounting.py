"""Every request the gateway accepted gets an HTTP answer and exactly one ledger row with the status its client
saw (issue 16): an ASGI wrapper around LiteLLM's app, inside the edge guard (confgen/gateway/edge.py).

LiteLLM answers and logs each request on code paths of its own, and a path that raises or returns early leaves
the client without an answer (uvicorn then sends a bare text 500, or drops the connection if the answer had
begun: uvicorn/protocols/http/httptools_impl.py, run_asgi) and the ledger without a row (no logging event).
So the wrapper holds the last word:

- An answer: the app ended without one -> a 500 in the API's error shape (OpenAI `{"error": {...}}`,
  Anthropic `{"type": "error", ...}`); a stream already under way that the app left unfinished -> an error
  event in its API's format (OpenAI `data: {"error": ...}`, Anthropic and Responses `event: error`), then
  the end of the stream. Retries on another replica are LiteLLM's Router's (before any byte is sent).
- One row: auth names the request (`request_id`, the id it puts in UserAPIKeyAuth.metadata) and `bind`s it
  here; our usage callback (confgen/ledger/logger.py) hands each row of a bound request to `claim` instead of
  the writer. Once the answer is out the wrapper waits (at most GRACE_S) for LiteLLM's logging events, which
  come after the answer, and writes ONE row: the answered event's (its usage) or the last failed attempt's,
  with the status the client saw: the answer's, the error a stream ended with, or 499 when the client left
  before the answer was complete (nginx's "client closed request"). A request no event reported gets a row
  from what the wrapper knows (key, model, route, latency), and its limits are settled (confgen/gateway/
  limits.py: Limiter.settle is once per request id, so a late or earlier settlement does not count twice).

The wait runs inside the request's ASGI call after its last byte (uvicorn does not hold the connection for
it) so uvicorn's graceful shutdown waits for it too before the ledger is flushed (confgen/gateway/runtime.py).
An event that comes later than GRACE_S goes straight to the writer (its conflict rule keeps one row per id:
confgen/ledger/writer.py INSERT).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from confgen.gateway import proxyinfo
from confgen.gateway.lanebody import ends_stream
from confgen.gateway.limits import Ticket
from confgen.ledger.row import UsageRow

log = logging.getLogger("confgen.gateway")
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Api = Literal["openai", "anthropic", "responses"]
GRACE_S: Final = 5.0  # how long after its answer a request's row waits for LiteLLM's logging events
CLIENT_GONE: Final = 499  # nginx's "client closed request": the client left before its answer was complete
NO_ANSWER: Final = 500
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}

_current: ContextVar[Outcome | None] = ContextVar("confgen_outcome", default=None)
_bound: dict[str, Outcome] = {}  # request id -> its outcome, while the request is under way or in its grace


def request_id() -> str:
    """The id of the request under way (the one the wrapper made for it), or a new one outside the wrapper."""
    outcome = _current.get()
    return outcome.request_id if outcome is not None else uuid.uuid4().hex


def bind(rid: str, *, prefix: str | None, alias: str | None, model: str | None, ticket: str | None) -> None:
    """Auth accepted (or refused) the request under way under `rid`: it is accounted for here, one row."""
    outcome = _current.get()
    if outcome is None or outcome.request_id != rid:
        return  # not under the wrapper (a unit test, a request LiteLLM makes itself): the callback writes
    outcome.prefix, outcome.alias, outcome.model, outcome.ticket = prefix, alias, model, ticket
    outcome.bound = True
    _bound[rid] = outcome


def claim(row: UsageRow) -> bool:
    """Take a logging event's row for a bound request (True), or leave it to the writer (False)."""
    outcome = _bound.get(row.request_id)
    if outcome is None:
        return False
    outcome.report(row)
    return True


def api_of(path: str) -> Api:
    if path.rstrip("/").endswith("/messages"):
        return "anthropic"
    return "responses" if path.rstrip("/").endswith("/responses") else "openai"


def error_body(api: Api, status: int, message: str) -> bytes:
    """A JSON error in the API's shape (as LiteLLM's own: litellm/proxy/_types.py ProxyException.to_dict;
    litellm/anthropic_interface/exceptions)."""
    if api == "anthropic":
        return json.dumps({"type": "error", "error": {"type": "api_error", "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                 "code": str(status)}}).encode()


def error_event(api: Api, status: int, message: str) -> bytes:
    """The event that ends a broken stream, in its API's format (as LiteLLM sends one: proxy_server.py
    async_data_generator for OpenAI; anthropic_error_sse_frame; the Responses API's `error` event)."""
    if api == "anthropic":
        return b"event: error\ndata: " + error_body(api, status, message) + b"\n\n"
    if api == "responses":
        data = {"type": "error", "code": "server_error", "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"
    return b"data: " + error_body(api, status, message) + b"\n\n"


def _has_error_event(chunk: bytes) -> bool:
    """An SSE error frame in a chunk of a stream (frames start a line; content is JSON-escaped inside)."""
    return (chunk.startswith((b"event: error", b'data: {"error"')) or b"\nevent: error" in chunk
            or b'\ndata: {"error"' in chunk)


@dataclass
class Outcome:
    """One request as its client saw it, and the rows its logging events reported."""

    request_id: str
    method: str
    path: str
    api: Api
    started: float = field(default_factory=time.time)
    bound: bool = False
    prefix: str | None = None
    alias: str | None = None
    model: str | None = None
    ticket: str | None = None
    status: int | None = None  # the answer's HTTP status, once it began
    stream: bool = False  # the answer is a server-sent event stream
    error_event: bool = False  # the stream carried an error event (LiteLLM's or ours)
    complete: bool = False  # the answer's last byte went out
    ended: bool = False  # the stream's last event went out (its closing bytes may still follow)
    client_gone: bool = False  # the client left before that
    answered_here: bool = False  # the app gave no answer: the wrapper's 500 is it
    reported: list[UsageRow] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self, row: UsageRow) -> None:
        self.reported.append(row)
        self.changed.set()

    def answered_row(self) -> UsageRow | None:
        return next((r for r in reversed(self.reported) if r.status == 200), None)

    def client_status(self) -> int:
        if self.client_gone:
            return CLIENT_GONE
        if self.status is None:
            return NO_ANSWER
        if self.status == 200 and self.error_event:
            failed = [r.status for r in self.reported if r.status != 200]
            return failed[-1] if failed else NO_ANSWER
        return self.status

    def settled(self) -> bool:
        """The events the row needs are in: the answer's usage (when there was one), or any event at all."""
        if self.answered_row() is not None:
            return True
        return self.client_status() not in (200, CLIENT_GONE) and bool(self.reported)

    def row(self, instance: str) -> UsageRow:
        status = self.client_status()
        base = self.answered_row()
        if base is None and status != 200 and self.reported:
            base = self.reported[-1]
        error_class, reason = self._why(status, base)
        if base is not None:
            if base.status == status:
                return base
            return replace(base, status=status, error_class=error_class, reason=reason)
        return UsageRow(request_id=self.request_id, ts=datetime.fromtimestamp(self.started, UTC), status=status,
                        key_prefix=self.prefix, key_alias=self.alias, model=self.model, route=self.path,
                        latency_ms=(time.time() - self.started) * 1000, error_class=error_class, reason=reason,
                        stream=self.stream, instance=instance)

    def _why(self, status: int, base: UsageRow | None) -> tuple[str | None, str | None]:
        if status == 200:
            return None, None
        if status == CLIENT_GONE:
            return "ClientDisconnected", "client_disconnected"
        if base is not None and base.status != 200:
            return base.error_class, base.reason
        if self.answered_here:
            return "NoAnswer", "no_answer"
        return ("StreamBroken", "stream_broken") if self.stream else ("AnswerFailed", "answer_failed")


class Accounting:
    """The ASGI wrapper: `put` queues a ledger row, `settle` frees a request's limits."""

    def __init__(self, app: Any, *, put: Callable[[UsageRow], None],
                 settle: Callable[[Ticket, int], Awaitable[object]], instance: str, grace_s: float = GRACE_S) -> None:
        self.app = app
        self.put = put
        self.settle = settle
        self.instance = instance
        self.grace_s = grace_s

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        outcome = Outcome(uuid.uuid4().hex, scope.get("method") or "", path, api_of(path))
        token = _current.set(outcome)
        cycle = _Cycle(outcome, receive, send)
        try:
            await self._answer(scope, cycle)
        finally:
            _current.reset(token)
            cycle.stop_listening()
            if outcome.bound:
                try:
                    await self._account(outcome)
                finally:
                    _bound.pop(outcome.request_id, None)

    async def _answer(self, scope: dict[str, Any], cycle: _Cycle) -> None:
        outcome = cycle.outcome
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception:
            if not outcome.bound and outcome.status is not None:
                raise  # not a request we account for, and its answer began: uvicorn ends the connection
            log.exception("%s %s (request %s): the app failed", outcome.method, outcome.path, outcome.request_id)
        if outcome.complete or cycle.hung_up:
            return
        if outcome.ended:  # the app stopped after the stream's last event: only the closing bytes were missing
            await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if outcome.status is None:
            outcome.answered_here = True
            body = error_body(outcome.api, NO_ANSWER, "The gateway failed to answer this request; it may be "
                              "retried (gateway request id " + outcome.request_id + ")")
            await cycle.send({"type": "http.response.start", "status": NO_ANSWER,
                              "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())]})
            await cycle.send({"type": "http.response.body", "body": body, "more_body": False})
        elif outcome.stream:
            event = error_event(outcome.api, NO_ANSWER, "The answer broke off: the model server or the gateway "
                                "failed during the stream (gateway request id " + outcome.request_id + ")")
            await cycle.send({"type": "http.response.body", "body": event, "more_body": False})
        # A plain answer cut short (its Content-Length not met) cannot be mended: uvicorn closes the connection.

    async def _account(self, outcome: Outcome) -> None:
        try:
            await self._wait_for_events(outcome)
        finally:  # also when cancelled (a shutdown that cannot wait longer): the row is written all the same
            row = outcome.row(self.instance)
            if not outcome.reported:
                log.warning("%s %s (request %s, key %s): no logging event reported it; ledger row %d written here",
                            outcome.method, outcome.path, outcome.request_id, outcome.alias, row.status)
            self.put(row)
        ticket = Ticket.from_meta(outcome.ticket or "")
        if ticket is not None:
            try:
                await self.settle(ticket, row.prompt_tokens + row.completion_tokens)
            except Exception:  # the slot then expires by itself (limits.py: its deadline)
                log.debug("settling the limits of %s failed", outcome.request_id, exc_info=True)


    async def _wait_for_events(self, outcome: Outcome) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.grace_s
        while not outcome.settled() and (left := end - loop.time()) > 0:
            outcome.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outcome.changed.wait(), left)


class _Cycle:
    """One request's receive and send, watched: what the answer was, and whether the client left before its end.

    Once the app has read the whole body, only the client leaving remains to be received (ASGI spec:
    http.disconnect); a task listens for it then, so a client that leaves during a plain (non-streamed) answer
    is seen too, and hands it to the app's own receive calls."""

    def __init__(self, outcome: Outcome, receive: Receive, send: Send) -> None:
        self.outcome = outcome
        self._receive = receive
        self._send = send
        self._listener: asyncio.Task[Message] | None = None
        self.hung_up = False  # the connection is gone (after the answer or before its end)

    async def receive(self) -> Message:
        if self._listener is not None:
            return await asyncio.shield(self._listener)
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._left()
        elif not message.get("more_body", False):
            self._listener = asyncio.ensure_future(self._listen())
        return message

    async def _listen(self) -> Message:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._left()
                return message

    def _left(self) -> None:
        self.hung_up = True
        if not (self.outcome.complete or self.outcome.ended):  # uvicorn says "disconnect" after a complete answer too
            self.outcome.client_gone = True

    def stop_listening(self) -> None:
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()

    async def send(self, message: Message) -> None:
        outcome = self.outcome
        if outcome.complete:
            return  # the app's answer after ours (or a second one): dropped, as uvicorn would refuse it
        if message["type"] == "http.response.start":
            if outcome.status is not None:
                return
            outcome.status = int(message["status"])
            content_type = dict(message.get("headers") or []).get(b"content-type", b"")
            outcome.stream = content_type.split(b";", 1)[0].strip().lower() == b"text/event-stream"
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if outcome.stream and _has_error_event(body):
                outcome.error_event = True
            if outcome.stream and not outcome.ended and ends_stream(body):
                outcome.ended = True
            if not message.get("more_body", False):
                outcome.complete = True  # before the send: uvicorn wakes receive() with "disconnect" in it
        await self._send(message)


def install(*, put: Callable[[UsageRow], None], settle: Callable[[Ticket, int], Awaitable[object]],
            instance: str) -> bool:
    """Wrap LiteLLM's app (and the relay lane, confgen/gateway/lane.py), inside the edge guard: call after
    lane.install and before edge.install. False outside the proxy."""
    proxy = sys.modules.get(proxyinfo.PROXY_MODULE)
    app = getattr(proxy, "app", None)
    if app is None:
        return False
    if app.middleware_stack is None:  # not started: a middleware like any other (edge.install then goes outside)
        if not any(m.cls is Accounting for m in app.user_middleware):
            app.add_middleware(Accounting, put=put, settle=settle, instance=instance)
    elif not isinstance(app.middleware_stack, Accounting):
        app.middleware_stack = Accounting(app.middleware_stack, put=put, settle=settle, instance=instance)
    log.info("every accepted request is answered and gets one ledger row (waiting up to %g s for its events)",
             GRACE_S)
    return True
