"""The LiteLLM callback (litellm_settings.callbacks) that turns every request's end into one ledger row
and settles its rate-limit counters. It only queues the row: the writer thread does the I/O.

Success and failure events both carry `standard_logging_object`; a request our auth rejected arrives as a
failure event whose exception is our KeyRejected (prefix, alias, reason, a request id of its own).
"""

from __future__ import annotations

import logging
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from confgen.gateway import runtime
from confgen.gateway.limits import Ticket
from confgen.ledger.events import META_TICKET, build_row

log = logging.getLogger("confgen.ledger")


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
