"""custom_auth for the LiteLLM proxy (general_settings.custom_auth): the master key administers; API keys
from PostgreSQL (via the TTL cache) call model routes within their models and limits.

Answers: 401 missing, malformed, unknown, revoked or expired key; 403 a model the key may not use or a
route only the master key may call; 429 + Retry-After over rpm, tpm, parallel requests or the token
budget; 503 a key that cannot be checked because the database is down and the key is not cached.
LiteLLM's own key checks need its Prisma database, which we do not run (FINDINGS).
"""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
from litellm.proxy.auth.auth_utils import get_request_route
from litellm.proxy.auth.route_checks import RouteChecks
from litellm.proxy.common_utils.http_parsing_utils import _safe_get_request_parsed_body

from confgen.gateway import metrics, proxyinfo, runtime
from confgen.gateway.keycache import KeysUnavailable
from confgen.gateway.rejection import KeyRejected
from confgen.keys import keyformat
from confgen.ledger.events import META_PREFIX, META_REQUEST_ID, META_TICKET


def _requested_model(request: Request) -> str | None:
    body = _safe_get_request_parsed_body(request) or {}
    model = body.get("model")
    return model if isinstance(model, str) else None


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """Named in config.yaml as general_settings.custom_auth."""
    try:
        return await _authenticate(request, api_key)
    except KeyRejected as rejected:
        metrics.record_rejection(rejected.reason)
        raise


async def _authenticate(request: Request, api_key: str) -> UserAPIKeyAuth:
    gw = runtime.gateway()
    if not api_key:
        raise KeyRejected(401, "missing_key", "No API key: send 'Authorization: Bearer <key>' (or x-api-key)")
    master = gw.config.master_key
    if master and hmac.compare_digest(api_key.encode(), master.encode()):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN, key_alias="master",
                              metadata={META_REQUEST_ID: uuid.uuid4().hex})
    try:
        prefix = keyformat.parse_prefix(api_key)
    except keyformat.MalformedKey as exc:
        raise KeyRejected(401, "invalid_key", f"Invalid API key: {exc}") from None
    try:
        record = await gw.keys.get(prefix)
    except KeysUnavailable:
        raise KeyRejected(503, "auth_unavailable", "The key database is unreachable and this key is not cached; "
                          "try again shortly", prefix=prefix, retry_after_s=5) from None
    if record is None or not keyformat.matches(api_key, record.key_hash):
        raise KeyRejected(401, "invalid_key", "Invalid API key: unknown key", prefix=prefix)
    now = datetime.now(UTC)
    status = record.status(now)
    if status != "active":
        raise KeyRejected(401, f"{status}_key", f"API key {record.alias} is {status}", prefix=prefix,
                          alias=record.alias)
    route = get_request_route(request)
    if not RouteChecks.is_llm_api_route(route):
        raise KeyRejected(403, "route_not_allowed", f"Only the master key may call {route}", prefix=prefix,
                          alias=record.alias)
    model = _requested_model(request)
    if model is not None and not record.allows(model):
        raise KeyRejected(403, "model_not_allowed", f"API key {record.alias} may not use model {model!r}; it may "
                          f"use: {', '.join(record.models or ())}", prefix=prefix, alias=record.alias)
    request_id = uuid.uuid4().hex
    metadata = {META_REQUEST_ID: request_id, META_PREFIX: prefix}
    if model is not None and record.limits.any:
        decision = await gw.limiter.admit(record, request_id, now)
        if not decision.ok:
            raise KeyRejected(429, decision.reason or "rate_limited", f"API key {record.alias} is over its "
                              f"{decision.limit} limit; retry in {decision.retry_after_s} s", prefix=prefix,
                              alias=record.alias, retry_after_s=decision.retry_after_s)
        if decision.ticket is not None:
            metadata[META_TICKET] = decision.ticket.to_meta()
    return UserAPIKeyAuth(token=f"confgen-{prefix}", key_alias=record.alias, user_id=record.owner,
                          user_role=LitellmUserRoles.INTERNAL_USER, metadata=metadata,
                          models=proxyinfo.listed_models(record.models, proxyinfo.served_models()))

