"""Ledger rows from LiteLLM's logging events (`standard_logging_object`), without importing LiteLLM.

Our auth puts a request id, the key prefix and a limits ticket into UserAPIKeyAuth.metadata, which
LiteLLM hands back as `metadata.user_api_key_auth_metadata`; a request our auth rejected arrives with
our KeyRejected as the exception (it carries `confgen_rejection = True`, prefix, alias and reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from confgen.ledger.row import UsageRow

# Keys of UserAPIKeyAuth.metadata, set by confgen.gateway.auth.
META_REQUEST_ID = "confgen_request_id"
META_PREFIX = "confgen_prefix"
META_TICKET = "confgen_ticket"
META_MODEL_WAIT = "confgen_model_wait_ms"  # set when the request waited for an on-demand model


def _rejection(exc: Any) -> Any:
    return exc if getattr(exc, "confgen_rejection", False) else None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def status_of(exc: Any, info: dict[str, Any]) -> int:
    """The HTTP status a failed request's client got (500 when the exception does not say)."""
    rejected = _rejection(exc)
    if rejected is not None:
        return int(rejected.status)
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
    rejected = _rejection(exc)
    if rejected is not None:
        request_id, prefix, alias = rejected.request_id, rejected.prefix, rejected.alias
        reason: str | None = rejected.reason
    else:
        request_id = auth_meta.get(META_REQUEST_ID) or call_id or ""
        prefix, alias = auth_meta.get(META_PREFIX), meta.get("user_api_key_alias")
        reason = None if ok else (info.get("normalized_error") or None)
    return UsageRow(
        request_id=str(request_id), ts=ts, status=200 if ok else status_of(exc, info), call_id=call_id,
        key_prefix=prefix, key_alias=alias, model=payload.get("model_group") or payload.get("model") or None,
        deployment=payload.get("api_base") or None, route=meta.get("user_api_key_request_route"),
        prompt_tokens=_int(payload.get("prompt_tokens")), completion_tokens=_int(payload.get("completion_tokens")),
        latency_ms=latency, ttft_ms=ttft, error_class=None if ok else (info.get("error_class") or type(exc).__name__),
        reason=reason, stream=bool(stream), instance=instance, model_wait_ms=_wait(auth_meta))


def _wait(auth_meta: dict[str, Any]) -> float | None:
    value = auth_meta.get(META_MODEL_WAIT)
    return float(value) if isinstance(value, int | float) else None
