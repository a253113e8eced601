"""The accounting wrapper (confgen.gateway.accounting): every accepted request gets an answer and one ledger row
with the status its client saw, whatever the app inside does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from confgen.gateway import accounting, lanebody
from confgen.gateway.limits import Ticket
from confgen.ledger.row import UsageRow

Message = dict[str, Any]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
TICKET = Ticket("pfx", "rid", "local", True, False, None).to_meta()
SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]


@dataclass
class Run:
    sent: list[Message] = field(default_factory=list)
    rows: list[UsageRow] = field(default_factory=list)
    settled: list[tuple[Ticket, int]] = field(default_factory=list)
    claims: list[bool] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent)


def serve(app: App, path: str = "/v1/chat/completions", *, leave_after_s: float | None = None,
          grace_s: float = 0.3, linger_s: float = 0.0) -> Run:
    run = Run()

    async def settle(ticket: Ticket, tokens: int) -> None:
        run.settled.append((ticket, tokens))

    async def main() -> None:
        left = asyncio.Event()
        if leave_after_s is not None:
            asyncio.get_running_loop().call_later(leave_after_s, left.set)
        parts = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> Message:
            if parts:
                return parts.pop(0)
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            run.sent.append(message)
            if not message.get("more_body", True) or (message["type"] == "http.response.body"
                                                      and not message.get("more_body", False)):
                left.set()  # uvicorn answers "disconnect" once the answer is complete

        wrapper = accounting.Accounting(app, put=run.rows.append, settle=settle, instance="test:1", grace_s=grace_s)
        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        await wrapper(scope, receive, send)
        await asyncio.sleep(linger_s)  # for events that come later still

    asyncio.run(main())
    return run


def row(rid: str, status: int, tokens: int = 0) -> UsageRow:
    return UsageRow(request_id=rid, ts=datetime.now(UTC), status=status, key_prefix="pfx", key_alias="alice",
                    model="big", prompt_tokens=tokens, completion_tokens=tokens, error_class=None if status == 200
                    else "InternalServerError", reason=None if status == 200 else "boom")


def later(delay_s: float, *rows: UsageRow, claims: list[bool] | None = None) -> None:
    """LiteLLM's logging events: they come after the answer, from another task."""

    async def report() -> None:
        await asyncio.sleep(delay_s)
        for r in rows:
            claimed = accounting.claim(r)
            if claims is not None:
                claims.append(claimed)

    asyncio.get_running_loop().create_task(report())


def bound(*, ticket: str | None = TICKET) -> str:
    rid = accounting.request_id()
    accounting.bind(rid, prefix="pfx", alias="alice", model="big", ticket=ticket)
    return rid


async def read_body(receive: Any) -> None:
    await receive()


def test_an_app_that_fails_before_answering_gets_a_500_in_the_openai_shape_and_one_row() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        bound()
        raise RuntimeError("LiteLLM lost it")

    run = serve(app)
    assert run.status == 500
    error = json.loads(run.body)["error"]
    assert error["code"] == "500"
    assert "gateway request id" in error["message"]
    assert [(r.status, r.error_class, r.reason, r.key_alias, r.model) for r in run.rows] == [
        (500, "NoAnswer", "no_answer", "alice", "big")]
    assert [t.rid for t, _ in run.settled] == ["rid"], "its limits are freed"


def test_the_anthropic_api_gets_its_own_error_shape() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bound()

    run = serve(app, "/v1/messages")
    assert run.status == 500
    assert json.loads(run.body)["type"] == "error"
    assert json.loads(run.body)["error"]["type"] == "api_error"
    assert len(run.rows) == 1


@pytest.mark.parametrize(("path", "frame"), [("/v1/chat/completions", b'data: {"error": {'),
                                             ("/v1/messages", b"event: error\ndata: {"),
                                             ("/v1/responses", b"event: error\ndata: {\"type\": \"error\"")])
def test_a_stream_the_app_leaves_unfinished_ends_with_an_error_event(path: str, frame: bytes) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        rid = bound()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b'data: {"choices": []}\n\n', "more_body": True})
        later(0.01, row(rid, 200, tokens=3))  # LiteLLM billed what was streamed
        raise ConnectionResetError("the replica died")

    run = serve(app, path)
    assert run.status == 200
    assert run.complete
    assert run.body.split(b"\n\n")[-2].startswith(frame.split(b"\n")[0])
    assert frame in run.body
    assert [(r.status, r.error_class, r.prompt_tokens) for r in run.rows] == [(500, "StreamBroken", 3)]


def test_a_stream_litellm_ended_with_its_error_event_has_that_errors_status() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        rid = bound()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b'data: {"choices": []}\n\n', "more_body": True})
        await send({"type": "http.response.body", "body": b'data: {"error": {"code": "502"}}\n\n', "more_body": False})
        later(0.01, row(rid, 502))

    run = serve(app)
    assert [r.status for r in run.rows] == [502]


def test_a_retried_request_is_one_row_the_answer() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        rid = bound()
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        later(0.02, row(rid, 500), row(rid, 200, tokens=5))  # the failed attempt, then the answer

    run = serve(app)
    assert [(r.status, r.prompt_tokens) for r in run.rows] == [(200, 5)]
    assert [tokens for _, tokens in run.settled] == [10]


def test_a_request_no_event_reported_still_gets_its_row() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bound(ticket=None)
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    run = serve(app, grace_s=0.1)
    assert [(r.status, r.key_prefix, r.route, r.error_class) for r in run.rows] == [
        (200, "pfx", "/v1/chat/completions", None)]
    assert run.settled == []


def test_a_client_that_leaves_during_a_plain_answer_is_a_499_with_the_usage() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        rid = bound()
        await asyncio.sleep(0.1)  # generating; the client leaves meanwhile (nobody reads receive)
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        later(0.01, row(rid, 200, tokens=4))

    run = serve(app, leave_after_s=0.03)
    assert [(r.status, r.error_class, r.reason, r.prompt_tokens) for r in run.rows] == [
        (499, "ClientDisconnected", "client_disconnected", 4)]


def test_a_client_that_leaves_a_stream_is_a_499() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        bound()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        assert (await receive())["type"] == "http.disconnect"  # Starlette's StreamingResponse listens so

    run = serve(app, leave_after_s=0.02, grace_s=0.05)
    assert [(r.status, r.stream) for r in run.rows] == [(499, True)]
    assert not run.complete, "nothing is sent to a client that left"


@pytest.mark.parametrize("last", [
    b'event: response.completed\ndata: {"type":"response.completed","response":{}}\n\n',
    b"data: [DONE]\n\n",
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'])
def test_a_client_that_leaves_after_the_streams_last_event_had_its_answer(last: bytes) -> None:
    """Codex hangs up on response.completed, before the stream's closing bytes (CI, stop 26: its rows were 499s)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        rid = bound()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b'data: {"choices":[]}\n\n', "more_body": True})
        await send({"type": "http.response.body", "body": last, "more_body": True})
        assert (await receive())["type"] == "http.disconnect"
        later(0.01, row(rid, 200, tokens=3))

    run = serve(app, leave_after_s=0.02, grace_s=0.3)
    assert [(r.status, r.prompt_tokens) for r in run.rows] == [(200, 3)]


@pytest.mark.parametrize(("chunk", "ends"), [
    (b'event: response.completed\ndata: {"type": "response.completed", "response": {}}\n\n', True),
    (b'data: {"choices":[]}\n\ndata: [DONE]\n\n', True),
    (b'data: {"choices":[{"delta":{"content":"data: [DONE]\\n"}}]}\n\n', False),
    (b'data: {"delta":{"text":"\\"type\\":\\"response.completed\\""}}\n\n', False)])
def test_only_a_streams_own_last_event_ends_it(chunk: bytes, ends: bool) -> None:
    assert lanebody.ends_stream(chunk) is ends


def test_a_client_that_leaves_before_the_streams_last_event_is_still_a_499() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        bound()
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b'data: {"type":"response.output_text.delta"}\n\n',
                    "more_body": True})
        assert (await receive())["type"] == "http.disconnect"

    run = serve(app, leave_after_s=0.02, grace_s=0.05)
    assert [r.status for r in run.rows] == [499]


def test_a_complete_answer_is_not_a_disconnect_and_events_after_the_grace_go_to_the_writer() -> None:
    claims: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        rid = bound()
        await send({"type": "http.response.start", "status": 429, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        later(0.01, row(rid, 429), claims=claims)
        later(0.4, row(rid, 429), claims=claims)

    run = serve(app, grace_s=0.2, linger_s=0.4)
    assert [r.status for r in run.rows] == [429]
    assert claims == [True, False]


def test_requests_auth_did_not_bind_are_not_accounted_here() -> None:
    claims: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": b"[]", "more_body": False})
        claims.append(accounting.claim(row(accounting.request_id(), 200)))

    run = serve(app, "/v1/models")
    assert run.rows == []
    assert claims == [False]
    assert run.body == b"[]"


def test_outside_the_wrapper_request_ids_are_fresh_and_bind_does_nothing() -> None:
    first, second = accounting.request_id(), accounting.request_id()
    assert first != second
    accounting.bind(first, prefix=None, alias=None, model=None, ticket=None)
    assert not accounting.claim(row(first, 200))


@pytest.mark.parametrize(("path", "api"), [("/v1/messages", "anthropic"), ("/v1/responses", "responses"),
                                           ("/openai/v1/responses", "responses"), ("/chat/completions", "openai"),
                                           ("/engines/m/completions", "openai")])
def test_api_of(path: str, api: str) -> None:
    assert accounting.api_of(path) == api


def test_a_shutdown_that_cancels_the_wait_still_writes_the_row() -> None:
    rows: list[UsageRow] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        bound(ticket=None)
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    async def settle(ticket: Ticket, tokens: int) -> None:
        raise AssertionError("no ticket, nothing to settle")

    async def main() -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            pass

        wrapper = accounting.Accounting(app, put=rows.append, settle=settle, instance="t", grace_s=30)
        task = asyncio.ensure_future(wrapper({"type": "http", "method": "POST", "path": "/v1/chat/completions"},
                                             receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [r.status for r in rows] == [200]
