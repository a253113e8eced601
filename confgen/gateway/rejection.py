"""The errors our auth answers with. LiteLLM hands the same exception to the failure event, so the
ledger row of a rejected request carries the key's prefix/alias and our reason (never the key)."""

from __future__ import annotations

from litellm.proxy._types import ProxyErrorTypes, ProxyException

from confgen.gateway import accounting

TYPES = {400: "invalid_request_error", 401: ProxyErrorTypes.auth_error, 403: "permission_error", 404: "not_found_error",
         429: "rate_limit_error", 503: "service_unavailable"}


class KeyRejected(ProxyException):  # type: ignore[misc]  # LiteLLM is not type-checked here
    confgen_rejection = True  # how confgen.ledger.events recognises it without importing LiteLLM

    def __init__(self, code: int, reason: str, message: str, *, prefix: str | None = None, alias: str | None = None,
                 retry_after_s: int | None = None) -> None:
        headers = {"retry-after": str(retry_after_s)} if retry_after_s else None
        super().__init__(message=message, type=TYPES.get(code, "auth_error"), param="api_key" if code == 401 else None,
                         code=code, headers=headers)
        self.status = code
        self.reason = reason
        self.prefix = prefix
        self.alias = alias
        self.request_id = accounting.request_id()  # the request's own id (confgen/gateway/accounting.py)
