"""The relay lane's upstream side: one attempt against the vLLM deployment LiteLLM's Router picked, the failure
reported back to the Router, and the answer held open until its first byte.

The Router drives it: `Router._ageneric_api_call_with_fallbacks` (litellm/router.py, the entry LiteLLM's own
/vllm pass-through route uses) picks a deployment (`async_get_available_deployment`: weights, cooldowns, health
verdicts), holds its max_parallel_requests slot (`_deployment_slot`), retries (`async_function_with_retries`:
num_retries, the retry policy, `should_retry_this_error`) and falls back to other model groups
(`async_function_with_fallbacks`). It calls `attempt` with the deployment's litellm_params; an exception raised
here is a failed attempt. LiteLLM's own calls report failures to the Router through the logging callbacks it
registered (`deployment_callback_on_failure`: failure counts, cooldowns; `async_deployment_callback_on_failure`:
rpm); `attempt` calls the same two, since no LiteLLM logging object runs here.

An attempt ends at the first byte: the status and headers, and the first piece of a stream (so a replica that
accepts the request but sends nothing within `stream_timeout` is retried elsewhere, as LiteLLM does) or the whole
body of a plain answer (within `timeout`). After that the answer is the client's: a stream that breaks off is
not retried (its bytes were sent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import httpx
import litellm
import orjson

from confgen.gateway.lanebody import UPSTREAM_PATH, Api, merged, with_usage_requested

log = logging.getLogger("confgen.gateway")
PROVIDER: Final = "hosted_vllm"
_BY_STATUS: Final[dict[int, type[Exception]]] = {
    400: litellm.BadRequestError, 401: litellm.AuthenticationError, 403: litellm.PermissionDeniedError,
    404: litellm.NotFoundError, 422: litellm.UnprocessableEntityError, 429: litellm.RateLimitError,
    503: litellm.ServiceUnavailableError,
}


@dataclass
class Job:
    """What the lane asks of every attempt: the request as the client sent it (model resolved)."""

    api: Api
    body: dict[str, Any]
    stream: bool
    tried: list[str] = field(default_factory=list)  # the URL of each attempt, in order


@dataclass
class Upstream:
    """A deployment's answer, open at its first byte. `_hidden_params` takes LiteLLM's retry and fallback
    headers (litellm/router_utils/add_retry_fallback_headers.py writes them there)."""

    status: int
    content_type: str
    first: bytes  # the whole body of a plain answer; a stream's first piece
    response: aiohttp.ClientResponse | None
    api_base: str
    model_group: str
    model_id: str
    strip_usage: bool
    first_at: float
    url: str = ""  # where the request went (api_base + the API's path)
    meta: dict[str, Any] = field(default_factory=dict)  # the Router's metadata of the attempt that answered
    # The Router's own metadata dicts of that attempt: `Router.make_call` marks there what it already counted
    # (litellm/router.py increment_deployment_usage_for_response), so the success report does not count it again.
    channels: dict[str, Any] = field(default_factory=dict)
    _hidden_params: dict[str, Any] = field(default_factory=dict)

    def rest(self) -> AsyncIterator[bytes]:
        """The rest of a stream, piece by piece as the socket delivers it."""
        if self.response is None:
            raise ValueError("a whole answer has no rest")
        return self.response.content.iter_any()

    def release(self) -> None:
        if self.response is not None:
            self.response.release()

    def headers(self) -> dict[str, str]:
        """The x-litellm-* headers LiteLLM's path sends (litellm/proxy/common_request_processing.py)."""
        extra = self._hidden_params.get("additional_headers") or {}
        return {"x-litellm-model-group": self.model_group, "x-litellm-model-api-base": self.api_base,
                "x-litellm-model-id": self.model_id,
                **{k: str(v) for k, v in extra.items() if isinstance(k, str) and k.startswith("x-litellm-")}}


class Sessions:
    """One aiohttp session per event loop (uvicorn runs one per worker), with kept-alive connections."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session


SESSIONS: Final = Sessions()


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The Router's per-request metadata: model group, chosen deployment (litellm/router.py
    `_update_kwargs_before_fallbacks`, `_update_kwargs_with_deployment`)."""
    meta: dict[str, Any] = {}
    for name in ("metadata", "litellm_metadata"):
        found = kwargs.get(name)
        if isinstance(found, dict):
            meta.update(found)
    return meta


def error_for(status: int, message: str, model: str, url: str) -> Exception:
    """The LiteLLM exception LiteLLM's own path raises for this upstream status (the Router's retry and cooldown
    rules read its `status_code`)."""
    response = httpx.Response(status, request=httpx.Request("POST", url))
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = litellm.InternalServerError if status >= 500 else litellm.BadRequestError
    exc: Exception = cls(message=message, model=model, llm_provider=PROVIDER, response=response)  # type: ignore[call-arg]
    exc.status_code = status  # type: ignore[attr-defined]  # InternalServerError keeps 500 otherwise
    return exc


@dataclass(frozen=True)
class _Send:
    """One attempt's request: where, what, how long it may take."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    limit: float  # a whole plain answer (litellm_params.timeout)
    idle: float  # the longest silence of a stream, its first byte included (litellm_params.stream_timeout)
    group: str
    api_base: str
    model_id: str
    strip: bool

    @property
    def model(self) -> str:
        return f"{PROVIDER}/{self.body.get('model')}"


async def attempt(*, relay_job: Job, **kwargs: Any) -> Upstream:
    """One attempt on the deployment the Router chose (`kwargs`: its litellm_params and the Router's metadata)."""
    meta = _metadata(kwargs)
    info = meta.get("model_info")
    api_base = str(kwargs.get("api_base") or meta.get("api_base") or "").rstrip("/")
    served = str(kwargs.get("model") or "").removeprefix(f"{PROVIDER}/")
    body, strip = with_usage_requested(relay_job.api, merged(relay_job.api, {**relay_job.body, "model": served},
                                                              kwargs))
    headers = {"Content-Type": "application/json"}
    if kwargs.get("api_key"):
        headers["Authorization"] = f"Bearer {kwargs['api_key']}"
    limit = float(kwargs.get("timeout") or litellm.request_timeout or 600)
    plan = _Send(api_base + UPSTREAM_PATH[relay_job.api], headers, body, limit,
                 float(kwargs.get("stream_timeout") or limit), str(meta.get("model_group") or ""), api_base,
                 str(info.get("id") or "") if isinstance(info, dict) else "", strip)
    relay_job.tried.append(plan.url)
    started = time.time()
    try:
        upstream = await _send(plan, relay_job.stream)
    except Exception as exc:
        report_failure(meta, exc, started)
        raise
    upstream.meta = meta
    upstream.channels = {name: kwargs[name] for name in ("metadata", "litellm_metadata")
                         if isinstance(kwargs.get(name), dict)}
    upstream.url = plan.url
    return upstream


async def _send(plan: _Send, stream: bool) -> Upstream:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(plan.limit, 10.0),
                                    sock_read=plan.idle if stream else None)
    try:
        async with asyncio.timeout(None if stream else plan.limit) as deadline:
            response = await SESSIONS.get().post(plan.url, data=orjson.dumps(plan.body), headers=plan.headers,
                                                 timeout=timeout)
            try:
                if response.status != 200 or not stream:
                    return _whole(plan, response, await response.read())
                deadline.reschedule(asyncio.get_running_loop().time() + plan.idle)  # the first piece within idle
                first = await response.content.readany()
                deadline.reschedule(None)
            except BaseException:
                response.release()
                raise
    except TimeoutError:
        raise litellm.Timeout(message=f"{PROVIDER}: no answer from {plan.api_base} within "
                              f"{plan.idle if stream else plan.limit:g} s", model=plan.model,
                              llm_provider=PROVIDER) from None
    except aiohttp.ClientError as exc:
        raise unreachable(plan.api_base, exc, plan.model) from None
    if not first:
        response.release()
        raise unreachable(plan.api_base, "ended the stream before its first byte", plan.model)
    return Upstream(200, response.content_type or "text/event-stream", first, response, plan.api_base, plan.group,
                    plan.model_id, plan.strip, time.time())


def unreachable(api_base: str, what: object, model: str) -> Exception:
    """A deployment that cannot be reached or breaks off: the InternalServerError (500) LiteLLM's aiohttp transport
    raises for it ("Hosted_vllmException - Cannot connect to host ..."), which the Router cools down; LiteLLM's own
    APIConnectionError is exempt from cooldowns (litellm/router_utils/cooldown_handlers.py `_is_cooldown_required`)."""
    detail = f"{type(what).__name__}: {what}" if isinstance(what, Exception) else str(what)
    error: Exception = litellm.InternalServerError(message=f"Hosted_vllmException - {api_base}: {detail}",
                                                   llm_provider=PROVIDER, model=model)
    return error


def _whole(plan: _Send, response: aiohttp.ClientResponse, body: bytes) -> Upstream:
    """A plain answer, or an error answer as the exception LiteLLM raises for it."""
    response.release()
    if response.status >= 400:
        raise error_for(response.status, _upstream_message(response.status, body), plan.model, plan.url)
    return Upstream(response.status, response.content_type or "application/json", body, None, plan.api_base,
                    plan.group, plan.model_id, plan.strip, time.time())


def _upstream_message(status: int, body: bytes) -> str:
    """vLLM's error message (`{"error": {"message": ...}}` or FastAPI's `{"detail": ...}`), else its body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{PROVIDER} answered {status}: {body[:300].decode(errors='replace')}"
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if "detail" in parsed:
            return str(parsed["detail"])
    return f"{PROVIDER} answered {status}"


def report_failure(meta: dict[str, Any], exc: Exception, started: float) -> None:
    """Tell the Router an attempt on this deployment failed, as LiteLLM's failure callbacks do."""
    router = _router()
    if router is None:
        return
    event = {"exception": exc, "litellm_params": {"metadata": meta, "model_info": meta.get("model_info") or {}}}
    try:
        router.deployment_callback_on_failure(event, None, started, time.time())
        task = asyncio.get_running_loop().create_task(
            router.async_deployment_callback_on_failure(event, None, started, time.time()))
        task.add_done_callback(_log_task_error)
    except Exception:  # the Router's bookkeeping must not turn the failure into another one
        log.exception("reporting a failed attempt to LiteLLM's Router failed")


async def report_success(upstream: Upstream, total_tokens: int, started: float) -> None:
    """Tell the Router the request succeeded (successes and tpm/rpm per deployment), as its success callback."""
    router = _router()
    if router is None:
        return
    meta = upstream.meta
    event = {"standard_logging_object": {"total_tokens": total_tokens},
             "litellm_params": {**upstream.channels, "metadata": meta, "model_info": meta.get("model_info") or {}}}
    if isinstance(upstream.channels.get("metadata"), dict):
        event["litellm_params"]["metadata"] = {**meta, **upstream.channels["metadata"]}
    try:
        await router.deployment_callback_on_success(event, None, started, time.time())
    except Exception:
        log.exception("reporting a success to LiteLLM's Router failed")


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("LiteLLM's Router failure bookkeeping failed: %s", task.exception())


def _router() -> Any:
    from confgen.gateway import proxyinfo

    return proxyinfo.router()
