"""The LiteLLM callback (litellm_settings.callbacks) that turns every request's end into one ledger row
and settles its rate-limit counters, and keeps the gateway's request metrics. It only queues the row: the
writer thread does the I/O.

Success and failure events both carry `standard_logging_object`; a request our auth rejected arrives as a
failure event whose exception is our KeyRejected (prefix, alias, reason, a request id of its own).
Metrics and limits count what the client got: a success event is the answer (its usage settles the
request's reserved tokens), and a failure counts once, in the proxy's post-call failure hook (a failure
event can be one attempt of a request that a retry or a fallback then answers, so it settles nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from confgen.gateway import accounting, metrics, proxyinfo, runtime
from confgen.gateway.limits import Ticket
from confgen.ledger.events import META_REQUEST_ID, META_TICKET, build_row, status_of
from confgen.ledger.row import UsageRow

log = logging.getLogger("confgen.ledger")


class UsageLogger(CustomLogger):  # type: ignore[misc]  # LiteLLM is not type-checked here
    def __init__(self) -> None:
        super().__init__()
        self.gateway = runtime.gateway()
        proxyinfo.mount("/metrics", metrics.asgi_app())  # behind LiteLLM's metrics auth (master key)

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        row = await self._record(kwargs, ok=True)
        if row is not None:
            auth_meta = ((kwargs.get("standard_logging_object") or {}).get("metadata") or {}).get(
                "user_api_key_auth_metadata") or {}
            await self._settle(auth_meta, row.prompt_tokens + row.completion_tokens, row.request_id)
            metrics.record_answer(
                metrics.model_label(row.model, proxyinfo.served_models()), row.key_alias,
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                latency_s=None if row.latency_ms is None else row.latency_ms / 1000,
                ttft_s=None if row.ttft_ms is None else row.ttft_ms / 1000)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        await self._record(kwargs, ok=False)

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        ours = getattr(original_exception, "confgen_rejection", False)
        alias = getattr(original_exception if ours else user_api_key_dict, "alias" if ours else "key_alias", None)
        metrics.record_failure(metrics.model_label((request_data or {}).get("model"), proxyinfo.served_models()),
                               alias if isinstance(alias, str) else None, status_of(original_exception, {}))
        # The request has failed for good: free its slot and its reservation (its usage, if any, is unknown).
        auth_meta = getattr(user_api_key_dict, "metadata", None)
        if isinstance(auth_meta, dict):
            await self._settle(auth_meta, 0, str(auth_meta.get(META_REQUEST_ID) or ""))

    async def _settle(self, auth_meta: dict[str, Any], tokens: int, request_id: str) -> None:
        ticket = Ticket.from_meta(auth_meta.get(META_TICKET) or "")
        if ticket is None:
            return
        try:
            await self.gateway.limiter.settle(ticket, tokens)
        except Exception:  # at exit the event loop may be a new one; the slot then expires by itself
            log.debug("settling the limits of %s failed", request_id, exc_info=True)

    async def _record(self, kwargs: dict[str, Any], ok: bool) -> UsageRow | None:
        payload = kwargs.get("standard_logging_object")
        if not isinstance(payload, dict):
            return None
        row = build_row(payload, kwargs.get("exception"), ok, self.gateway.instance)
        if not row.request_id:
            log.error("usage event without a request id (call type %s): not recorded", payload.get("call_type"))
            return None
        if not accounting.claim(row):  # a request the accounting wrapper answers for writes its row itself
            self.gateway.ledger.put(row)
        return row



usage_logger = UsageLogger()
