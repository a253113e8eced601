"""One request on the relay lane (confgen/gateway/lane.py): auth, the Router's attempts, the bytes, the row.

The ledger row, the metrics and the settlement of the key's limits go through our usage callback
(confgen.ledger.logger.usage_logger) with the payload LiteLLM would hand it: the fields of LiteLLM's
`standard_logging_object` that confgen.ledger.events.build_row reads, and LiteLLM's own error information
(litellm_logging.py `StandardLoggingPayloadSetup.get_error_information`). So both lanes write one row per
request by one function, and settle once (the success event, or the post-call failure hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, Final

import aiohttp
import litellm
import orjson
from fastapi import Request
from litellm.litellm_core_utils.litellm_logging import StandardLoggingPayloadSetup
from litellm.proxy._types import ProxyException, UserAPIKeyAuth
from litellm.proxy.auth.user_api_key_auth import get_api_key

from confgen.gateway import auth, laneup, proxyinfo
from confgen.gateway.lanebody import Api, StreamRelay, Usage, answer_usage, ends_stream
from confgen.gateway.laneup import Job, Upstream

log = logging.getLogger("confgen.gateway")
Message = dict[str, Any]
_CALL_ID: Final = b"x-litellm-call-id"
LANE_HEADER: Final = (b"x-confgen-lane", b"relay")  # says which lane answered (tests, curl -i)


def _api_key(request: Request, route: str) -> str:
    """The key as LiteLLM reads it (litellm/proxy/auth/user_api_key_auth.py: its header order, `Bearer ` cut)."""
    h = request.headers
    key, _ = get_api_key(custom_litellm_key_header=h.get("x-litellm-api-key"), api_key=h.get("authorization") or "",
                         azure_api_key_header=h.get("api-key"), anthropic_api_key_header=h.get("x-api-key"),
                         google_ai_studio_api_key_header=h.get("x-goog-api-key"),
                         azure_apim_header=h.get("ocp-apim-subscription-key"), pass_through_endpoints=None,
                         route=route, request=request)
    return key or ""


async def serve(scope: dict[str, Any], receive: Any, send: Any, *, route: Any, api: Api, body: dict[str, Any],
                group: str) -> None:
    path = scope.get("path") or ""
    call = _Call(send, str(uuid.uuid4()), path, group, body.get("stream") is True)
    # LiteLLM's cache of the parsed body (http_parsing_utils._safe_get_request_parsed_body): auth reads it there.
    request = Request({**scope, "route": route, "path_params": {}, "parsed_body": (tuple(body), body)}, receive)
    try:
        user = await auth.user_api_key_auth(request, _api_key(request, path))
    except Exception as exc:  # our KeyRejected, or a failure inside auth: answered as LiteLLM answers them
        await call.refused(exc)
        return
    call.started = time.time()  # LiteLLM's startTime: the call after auth
    job = Job(api, body, call.stream)
    try:
        upstream: Upstream = await proxyinfo.router()._ageneric_api_call_with_fallbacks(
            model=group, original_function=laneup.attempt, relay_job=job,
            litellm_metadata={"user_api_key_alias": user.key_alias})
    except Exception as exc:
        await call.failed(exc, user, job.tried[-1] if job.tried else None)
        return
    await call.answer(upstream, user, receive)


class _Call:
    def __init__(self, send: Any, call_id: str, path: str, group: str, stream: bool) -> None:
        self._send = send
        self.call_id = call_id
        self.path = path
        self.group = group
        self.stream = stream
        self.started = time.time()

    def _payload(self, user: UserAPIKeyAuth | None, model_group: str, api_base: str | None, usage: Usage,
                 first_at: float | None) -> dict[str, Any]:
        """The fields of LiteLLM's standard_logging_object that the ledger reads (confgen/ledger/events.py)."""
        meta = {"user_api_key_auth_metadata": (user.metadata if user is not None else None) or {},
                "user_api_key_alias": user.key_alias if user is not None else None,
                "user_api_key_request_route": self.path}
        return {"litellm_call_id": self.call_id, "id": self.call_id, "model_group": model_group, "model": model_group,
                "api_base": api_base, "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens, "startTime": self.started,
                "endTime": time.time(), "completionStartTime": first_at, "stream": self.stream, "metadata": meta}

    async def refused(self, exc: Exception) -> None:
        await self._error(exc)
        await self._log_failure(exc, None, None, streamed=False)

    async def failed(self, exc: Exception, user: UserAPIKeyAuth, api_base: str | None) -> None:
        """Every attempt failed before a first byte: LiteLLM logs such a stream as not streamed (its failure
        payload's `stream` is only set once a stream exists; compared on both lanes by tests/e2e/test_lane.py)."""
        await self._error(exc)
        await self._log_failure(exc, user, api_base, streamed=False)

    async def _log_failure(self, exc: Exception, user: UserAPIKeyAuth | None, api_base: str | None,
                           streamed: bool | None = None) -> None:
        from confgen.ledger.logger import usage_logger

        payload = self._payload(user, self.group, api_base, Usage(), None)
        payload["stream"] = self.stream if streamed is None else streamed
        payload["error_information"] = StandardLoggingPayloadSetup.get_error_information(original_exception=exc)
        try:
            await usage_logger.async_log_failure_event({"standard_logging_object": payload, "exception": exc},
                                                       None, self.started, payload["endTime"])
            await usage_logger.async_post_call_failure_hook({"model": self.group}, exc, user or UserAPIKeyAuth())
        except Exception:
            log.exception("recording the failed request %s failed", self.call_id)

    async def _log_success(self, upstream: Upstream, user: UserAPIKeyAuth, usage: Usage) -> None:
        from confgen.ledger.logger import usage_logger

        # LiteLLM logs the deployment's api_base with the endpoint's path (compared on both lanes by
        # tests/e2e/test_lane.py).
        payload = self._payload(user, upstream.model_group, upstream.url, usage,
                                upstream.first_at if self.stream else None)
        try:
            await usage_logger.async_log_success_event({"standard_logging_object": payload}, None, self.started,
                                                       payload["endTime"])
        except Exception:
            log.exception("recording request %s failed", self.call_id)
        await laneup.report_success(upstream, payload["total_tokens"], self.started)

    async def _error(self, exc: Exception) -> None:
        """The error as LiteLLM's proxy answers it (litellm/proxy/_types.py ProxyException.to_dict)."""
        if isinstance(exc, ProxyException):
            status, headers = int(exc.code) if str(exc.code).isdigit() else 500, dict(exc.headers or {})
            error = exc.to_dict()
        else:
            status = int(getattr(exc, "status_code", 500) or 500)
            if type(exc) not in litellm.LITELLM_EXCEPTION_TYPES:
                log.error("relay lane: %s: %s", type(exc).__name__, exc)
            message = str(getattr(exc, "message", None) or exc)
            error = {"message": message, "type": getattr(exc, "type", None), "param": getattr(exc, "param", None),
                     "code": str(status)}
            retry = getattr(exc, "retry_after", None)
            headers = {"retry-after": str(retry)} if retry else {}
            if "No deployments available" in message or "No healthy deployment available" in message:
                status = 429  # as ProxyException does (litellm/proxy/_types.py)
                error["code"] = "429"
        data = orjson.dumps({"error": error})
        await self._send({"type": "http.response.start", "status": status,
                          "headers": [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(data)).encode()), (_CALL_ID, self.call_id.encode()),
                                      LANE_HEADER,
                                      *((k.lower().encode(), str(v).encode()) for k, v in headers.items())]})
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    def _start(self, upstream: Upstream, length: int | None) -> Message:
        headers = [(b"content-type", upstream.content_type.encode()), (_CALL_ID, self.call_id.encode()), LANE_HEADER,
                   *((k.encode(), v.encode()) for k, v in upstream.headers().items())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return {"type": "http.response.start", "status": upstream.status, "headers": headers}

    async def answer(self, upstream: Upstream, user: UserAPIKeyAuth, receive: Any) -> None:
        if upstream.response is None:  # a whole answer
            await self._send(self._start(upstream, len(upstream.first)))
            await self._send({"type": "http.response.body", "body": upstream.first, "more_body": False})
            await self._log_success(upstream, user, answer_usage(upstream.first))
            return
        relay = StreamRelay(upstream.strip_usage)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._send(self._start(upstream, None))
            piece = relay.feed(upstream.first)
            if piece:
                await self._send({"type": "http.response.body", "body": piece, "more_body": True})
            async for data in upstream.rest():
                if gone.done():
                    break
                piece = relay.feed(data)
                if piece:
                    await self._send({"type": "http.response.body", "body": piece, "more_body": True})
            if gone.done() and not ends_stream(piece):
                raise _ClientLeft  # noqa: TRY301 - one place for every way a stream breaks off
            if gone.done():  # after the stream's last event: the answer was whole, only its closing bytes are left
                relay.close()
            else:
                await self._send({"type": "http.response.body", "body": relay.close(), "more_body": False})
        except (aiohttp.ClientError, TimeoutError, _ClientLeft) as exc:
            await self._broken(exc, upstream, user)
            return
        finally:
            gone.cancel()
            upstream.release()
        await self._log_success(upstream, user, relay.usage)

    async def _broken(self, exc: BaseException, upstream: Upstream, user: UserAPIKeyAuth) -> None:
        """A stream that broke off after its first byte: not retried (its bytes were sent). The client gets an
        error event, as from LiteLLM's stream wrapper; the deployment's failure goes to the Router."""
        model = f"{laneup.PROVIDER}/{upstream.model_group}"
        if isinstance(exc, _ClientLeft):
            error: Exception = litellm.APIConnectionError(message="the client disconnected during the stream",
                                                          llm_provider=laneup.PROVIDER, model=model)
        elif isinstance(exc, TimeoutError):
            error = litellm.Timeout(message=f"{laneup.PROVIDER}: {upstream.api_base} went silent during the stream",
                                    model=model, llm_provider=laneup.PROVIDER)
        else:
            error = laneup.unreachable(upstream.api_base, exc, model)
        if not isinstance(exc, _ClientLeft):
            laneup.report_failure(upstream.meta, error, self.started)
            event = orjson.dumps({"error": {"message": error.message, "type": None, "param": None,  # type: ignore[attr-defined]
                                            "code": str(error.status_code)}})  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await self._send({"type": "http.response.body", "body": b"data: " + event + b"\n\n",
                                  "more_body": False})
        await self._log_failure(error, user, upstream.url)


class _ClientLeft(Exception):
    pass


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone (uvicorn answers http.disconnect once it has, or the response is done)."""
    while (await receive())["type"] != "http.disconnect":
        pass
