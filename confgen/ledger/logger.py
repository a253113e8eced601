"""The LiteLLM callback (litellm_settings.callbacks) that turns every request's end into one ledger row
and settles its rate-limit counters. It only queues the row: the writer thread does the I/O.

Success and failure events both carry `standard_logging_object`; a request our auth rejected arrives as a
failure event whose exception is our KeyRejected (prefix, alias, reason, a request id of its own).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from confgen.gateway import runtime
from confgen.gateway.auth import META_PREFIX, META_REQUEST_ID, META_TICKET
from confgen.gateway.limits import Ticket
from confgen.gateway.rejection import KeyRejected
from confgen.ledger.row import UsageRow

log = logging.getLogger("confgen.ledger")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _status(exc: Any, info: dict[str, Any]) -> int:
    if isinstance(exc, KeyRejected):
        return exc.status
    for candidate in (getattr(exc, "status_code", None), getattr(exc, "code", None), info.get("error_code")):
        code = _int(candidate, 0)
        if 100 <= code <= 599:
            return code
    return 500


def build_row(payload: dict[str, Any], exc: Any, ok: bool, instance: str) -> UsageRow:
    """One row from LiteLLM's standard logging payload (and, for failures, the exception)."""
    meta = payload.get("metadata") or {}
    auth_meta = meta.get("user_api_key_auth_metadata") or {}
    start = payload.get("startTime")
    end = payload.get("endTime")
    first = payload.get("completionStartTime")
    stream = payload.get("stream")
    latency = (end - start) * 1000 if isinstance(start, float) and isinstance(end, float) else None
    ttft = (first - start) * 1000 if stream and isinstance(first, float) and isinstance(start, float) else None
    ts = datetime.fromtimestamp(start, UTC) if isinstance(start, int | float) else datetime.now(UTC)
    info = payload.get("error_information") or {}
    call_id = payload.get("litellm_call_id") or payload.get("id")
    rejected = exc if isinstance(exc, KeyRejected) else None
    if rejected is not None:
        request_id, prefix, alias = rejected.request_id, rejected.prefix, rejected.alias
        reason: str | None = rejected.reason
    else:
        request_id = auth_meta.get(META_REQUEST_ID) or call_id or ""
        prefix, alias = auth_meta.get(META_PREFIX), meta.get("user_api_key_alias")
        reason = None if ok else (info.get("normalized_error") or None)
    return UsageRow(
        request_id=str(request_id), ts=ts, status=200 if ok else _status(exc, info), call_id=call_id,
        key_prefix=prefix, key_alias=alias, model=payload.get("model_group") or payload.get("model") or None,
        deployment=payload.get("api_base") or None, route=meta.get("user_api_key_request_route"),
        prompt_tokens=_int(payload.get("prompt_tokens")), completion_tokens=_int(payload.get("completion_tokens")),
        latency_ms=latency, ttft_ms=ttft, error_class=None if ok else (info.get("error_class") or type(exc).__name__),
        reason=reason, stream=stream if isinstance(stream, bool) else None, instance=instance)


class UsageLogger(CustomLogger):  # type: ignore[misc]  # LiteLLM is not type-checked here
    def __init__(self) -> None:
        super().__init__()
        self.gateway = runtime.gateway()

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        await self._record(kwargs, ok=True)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        await self._record(kwargs, ok=False)

    async def _record(self, kwargs: dict[str, Any], ok: bool) -> None:
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, dict):
            return
        row = build_row(payload, kwargs.get("exception"), ok, self.gateway.instance)
        if not row.request_id:
            log.error("usage event without a request id (call type %s): not recorded", payload.get("call_type"))
            return
        self.gateway.ledger.put(row)
        auth_meta = (payload.get("metadata") or {}).get("user_api_key_auth_metadata") or {}
        ticket = Ticket.from_meta(auth_meta.get(META_TICKET) or "")
        if ticket is not None:
            try:
                await self.gateway.limiter.settle(ticket, row.prompt_tokens + row.completion_tokens)
            except Exception:  # at exit the event loop may be a new one; the slot then expires by itself
                log.debug("settling the limits of %s failed", row.request_id, exc_info=True)


usage_logger = UsageLogger()
