"""confgen.gateway.edge: body size (413, by Content-Length or counted as it arrives), header size (431) and
body stalls (408) answered at the edge, whatever the app behind does; real asyncio, a stand-in ASGI app."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.applications import Starlette

from confgen.gateway import edge, proxyinfo
from confgen.gateway.config import EdgeLimits
from confgen.gateway.edge import EdgeGuard

Message = dict[str, Any]
LIMITS = EdgeLimits(max_body_bytes=100, max_header_bytes=200, body_timeout_s=0.05)


def scope(headers: list[tuple[bytes, bytes]] | None = None, path: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers or [], "client": ("127.0.0.1", 5000)}


class Client:
    """The server side of one request: body chunks to hand out (None: the client stalls), what was sent."""

    def __init__(self, *chunks: bytes | None) -> None:
        self.chunks = list(chunks)
        self.sent: list[Message] = []
        self.reads = 0

    async def receive(self) -> Message:
        self.reads += 1
        if not self.chunks:
            await asyncio.sleep(3600)  # a client that is done sending: only a disconnect would come
        chunk = self.chunks.pop(0)
        if chunk is None:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> dict[str, Any]:
        data = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return dict(json.loads(data))


class App:
    """Reads the whole body, then answers 200 with what it got (or whatever it saw instead)."""

    def __init__(self) -> None:
        self.calls = 0
        self.got: list[Message] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        self.calls += 1
        while True:
            message = await receive()
            self.got.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok": true}', "more_body": False})


def run(guard: EdgeGuard, request: dict[str, Any], client: Client) -> None:
    asyncio.run(asyncio.wait_for(guard(request, client.receive, client.send), 5))


FORM = (b"content-type", b"multipart/form-data; boundary=x")


def test_a_request_within_the_limits_passes_untouched() -> None:
    app, client = App(), Client(b"x" * 60, b"y" * 40)
    run(EdgeGuard(app, LIMITS), scope([(b"content-length", b"100"), FORM]), client)
    assert client.status == 200
    assert client.body == {"ok": True}
    assert [len(m["body"]) for m in app.got] == [60, 40]  # form data is streamed through as it comes


def test_a_json_body_reaches_the_app_whole() -> None:
    app, client = App(), Client(b'{"model": "a", ', b'"max_tokens": 4}')
    run(EdgeGuard(app, LIMITS), scope([(b"content-type", b"application/json")]), client)
    assert client.status == 200
    assert app.got == [{"type": "http.request", "body": b'{"model": "a", "max_tokens": 4}', "more_body": False}]


@pytest.mark.parametrize(("body", "kind"), [(b"null", "null"), (b" [] ", "array"), (b"1", "number"),
                                            (b'"x"', "string"), (b"true", "boolean"), (b"-2.5", "number")])
@pytest.mark.parametrize("content_type", [b"application/json", b"text/plain", None])
def test_json_that_is_not_an_object_gets_400(body: bytes, kind: str, content_type: bytes | None) -> None:
    """LiteLLM parses every body but form data and protobuf as JSON, and its auth fails on a non-object."""
    app, client = App(), Client(body)
    run(EdgeGuard(app, LIMITS), scope([(b"content-type", content_type)] if content_type else []), client)
    assert (client.status, client.body["error"]["type"]) == (400, "invalid_request_error")
    assert client.body["error"]["message"] == f"the request body must be a JSON object ({{...}}), not a JSON {kind}"
    assert app.got == [{"type": "http.disconnect"}]


def test_a_body_with_litellms_own_fields_gets_400() -> None:
    app, client = App(), Client(b'{"model": "a", "litellm_logging_obj": {}}')
    run(EdgeGuard(app, LIMITS), scope(), client)
    assert client.status == 400
    assert client.body["error"]["message"] == ("the request body holds 'litellm_logging_obj': a field the gateway "
                                               "sets itself for each request: remove it")
    assert edge.json_problem(b'{"guardrails": ["x"], "litellm_logging_obj": 1}') == (
        "the request body holds 'guardrails': LiteLLM guardrails, and this gateway configures none; "
        "'litellm_logging_obj': a field the gateway sets itself for each request: remove them")


@pytest.mark.parametrize("body", [b"", b"  ", b"{not json", b"\xff\xfe"])
def test_empty_bodies_and_bodies_that_are_not_json_are_left_to_litellm(body: bytes) -> None:
    app, client = App(), Client(body)
    run(EdgeGuard(app, LIMITS), scope(), client)
    assert client.status == 200
    assert app.got[0]["body"] == body


def test_form_data_is_not_parsed() -> None:
    app, client = App(), Client(b"[1]")
    run(EdgeGuard(app, LIMITS), scope([(b"content-type", b"application/x-www-form-urlencoded")]), client)
    assert client.status == 200


@pytest.mark.parametrize("path", ["/langfuse/api/public/traces", "/langfuse/", "/vertex_ai/discovery/\x0c",
                                  "/public/skill_hub", "/public/skill_hub/", "/get/ui_settings",
                                  "/claude-code/marketplace.json", "/toolset/t/mcp"])
def test_routes_this_stack_cannot_serve_get_404_before_the_app(path: str) -> None:
    app, client = App(), Client(b"{}")
    run(EdgeGuard(app, LIMITS), scope(path=path), client)
    assert (client.status, app.calls) == (404, 0)
    assert "is not served by this gateway" in client.body["error"]["message"]


@pytest.mark.parametrize("path", ["/langfuse", "/public/model_hub", "/get/ui_settings_x", "/v1/chat/completions"])
def test_other_routes_are_served(path: str) -> None:
    assert edge.not_served(path) is None


def test_headers_over_the_limit_get_431_and_never_reach_the_app(caplog: pytest.LogCaptureFixture) -> None:
    app, client = App(), Client(b"{}")
    run(EdgeGuard(app, LIMITS), scope([(b"x-big", b"a" * 200)]), client)
    assert (client.status, app.calls, client.reads) == (431, 0, 0)
    assert client.body["error"]["type"] == "request_header_fields_too_large"
    assert (b"connection", b"close") in client.sent[0]["headers"]
    assert "refused POST /v1/chat/completions from 127.0.0.1: 431" in caplog.text


def test_a_content_length_over_the_limit_gets_413_and_the_body_is_drained() -> None:
    app, client = App(), Client(b"x" * 100, b"x" * 50)
    run(EdgeGuard(app, LIMITS), scope([(b"content-length", b"150")]), client)
    assert (client.status, app.calls) == (413, 0)
    assert client.body["error"] == {"message": "request body larger than 100 bytes", "type": "request_too_large",
                                    "param": None, "code": "413"}
    assert client.reads == 2  # read and dropped, so the sender gets the answer rather than a reset
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_client_waiting_for_100_continue_is_answered_without_reading() -> None:
    app, client = App(), Client(b"x" * 150)
    run(EdgeGuard(app, LIMITS), scope([(b"content-length", b"150"), (b"expect", b"100-continue")]), client)
    assert (client.status, client.reads) == (413, 0)


def test_a_streamed_body_over_the_limit_gets_413_and_the_app_sees_a_disconnect() -> None:
    app, client = App(), Client(b"x" * 60, b"x" * 60, b"x" * 60)  # no Content-Length: chunked
    run(EdgeGuard(app, LIMITS), scope(), client)
    assert client.status == 413
    assert app.got[-1] == {"type": "http.disconnect"}
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body", "http.response.body"]
    assert client.chunks == []  # the rest was drained


def test_a_stalled_body_gets_408() -> None:
    app, client = App(), Client(b"x" * 10, None)
    run(EdgeGuard(app, LIMITS), scope([(b"content-length", b"50")]), client)
    assert client.status == 408
    assert client.body["error"]["message"] == "the request body stalled for more than 0.05 s"
    assert app.got[-1] == {"type": "http.disconnect"}


def test_no_timeout_once_the_body_is_in() -> None:
    """A streaming answer listens for the client leaving (starlette's StreamingResponse): that may take long."""
    waited: list[Message] = []

    async def listening_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Message]],
                            send: Callable[[Message], Awaitable[None]]) -> None:
        await receive()
        waited.append(await asyncio.wait_for(receive(), 0.2))

    client = Client(b"{}")
    with pytest.raises(TimeoutError):
        run(EdgeGuard(listening_app, LIMITS), scope(), client)
    assert waited == []
    assert client.sent == []  # no 408: the body was complete


def test_other_scopes_pass() -> None:
    app = App()

    async def go() -> None:
        await EdgeGuard(app, LIMITS)({"type": "lifespan"}, Client().receive, Client().send)

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(go(), 0.1))  # the stand-in app waits for a message that never comes
    assert app.calls == 1


def fake_proxy(monkeypatch: pytest.MonkeyPatch, app: Starlette) -> None:
    module = types.ModuleType(proxyinfo.PROXY_MODULE)
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, proxyinfo.PROXY_MODULE, module)


def test_install_wraps_a_started_app_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Starlette()
    app.middleware_stack = app.build_middleware_stack()  # as after the lifespan's start
    inner = app.middleware_stack
    fake_proxy(monkeypatch, app)
    assert edge.install(LIMITS)
    assert isinstance(app.middleware_stack, EdgeGuard)
    assert app.middleware_stack.app is inner
    assert edge.install(LIMITS)
    assert app.middleware_stack.app is inner  # not wrapped twice


def test_install_adds_a_middleware_to_an_app_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Starlette()
    fake_proxy(monkeypatch, app)
    assert edge.install(LIMITS)
    assert edge.install(LIMITS)
    assert [m.cls for m in app.user_middleware] == [EdgeGuard]


def test_install_outside_the_proxy_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, proxyinfo.PROXY_MODULE, raising=False)
    assert not edge.install(LIMITS)
