"""custom_auth for the LiteLLM proxy (general_settings.custom_auth): the master key administers; API keys
from PostgreSQL (via the TTL cache) call model routes within their models and limits.

The model a request addresses is read the way LiteLLM serves it, path before body
(confgen/gateway/requestmodel.py); every inference route an API key may call is checked against the key's
model list and limits, whatever its body holds.

Answers: 401 missing, malformed, unknown, revoked or expired key; 400 a request that addresses no model,
several, or a name that is not one; 403 a model the key may not use or a route only the master key may
call; 429 + Retry-After over rpm, tpm, parallel requests or the token budget; 503 a key that cannot be
checked because the database is down and the key is not cached, or a budget that cannot be read.
LiteLLM's own key checks need its Prisma database (litellm/proxy/auth/user_api_key_auth.py), which we do not run.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

from confgen.gateway import accounting, metrics, ondemand, priority, proxyinfo, requestmodel, runtime
from confgen.gateway.keycache import KeysUnavailable
from confgen.gateway.rejection import KeyRejected
from confgen.keys import keyformat
from confgen.keys.record import MODEL_PATTERN, KeyRecord
from confgen.ledger.events import META_MODEL_WAIT, META_PREFIX, META_REQUEST_ID, META_TICKET


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """Named in config.yaml as general_settings.custom_auth."""
    try:
        return await _authenticate(request, api_key)
    except KeyRejected as rejected:
        metrics.record_rejection(rejected.reason)
        if _accounted(request):
            accounting.bind(rejected.request_id, prefix=rejected.prefix, alias=rejected.alias, model=None,
                            ticket=None)
        raise


def _accounted(request: Request) -> bool:
    """A request that is one ledger row (confgen/gateway/accounting.py): the inference routes LiteLLM logs."""
    route, kind = requestmodel.route_of(request)
    return kind == "inference" and not route.endswith("/count_tokens")


async def _authenticate(request: Request, api_key: str) -> UserAPIKeyAuth:
    gw = runtime.gateway()
    if not api_key:
        raise KeyRejected(401, "missing_key", "No API key: send 'Authorization: Bearer <key>' (or x-api-key)")
    master = gw.config.master_key
    if master and hmac.compare_digest(api_key.encode(), master.encode()):
        await _check_master_request(request)
        held = await _hold_master_request(request)
        rid = accounting.request_id()
        if _accounted(request):
            accounting.bind(rid, prefix=None, alias="master", model=None, ticket=None)
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN, key_alias="master",
                              metadata={META_REQUEST_ID: rid, **held})
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
    try:
        target = await requestmodel.addressed(request)
    except requestmodel.NotAddressable as refused:
        raise KeyRejected(refused.status, refused.reason, refused.message, prefix=prefix,
                          alias=record.alias) from None
    if target.model is not None and not record.allows(target.model):
        raise KeyRejected(403, "model_not_allowed", f"API key {record.alias} may not use model {target.model!r}; "
                          f"it may use: {', '.join(record.models or ())}", prefix=prefix, alias=record.alias)
    # Before admission: a request held while its on-demand model loads spends none of the key's limits.
    held = await _hold(target, prefix, record.alias, record.priority or 0)
    priority.apply(request, target.route, target.model, record.priority)  # vLLM's, for priority-scheduled models
    request_id = accounting.request_id()
    metadata: dict[str, object] = {META_REQUEST_ID: request_id, META_PREFIX: prefix, **held}
    ticket: str | None = None
    if target.kind == "inference" and target.model is not None and record.limits.any:
        ticket = await _admit(record, target, target.model, request_id, now)
        if ticket is not None:
            metadata[META_TICKET] = ticket
    if _accounted(request):
        accounting.bind(request_id, prefix=prefix, alias=record.alias, model=target.model, ticket=ticket)
    return UserAPIKeyAuth(token=f"confgen-{prefix}", key_alias=record.alias, user_id=record.owner,
                          user_role=LitellmUserRoles.INTERNAL_USER, metadata=metadata,
                          models=proxyinfo.listed_models(record.models, proxyinfo.served_models()))


async def _hold(target: requestmodel.Addressed, prefix: str | None, alias: str, rank: int = 0) -> dict[str, object]:
    """Wait until the on-demand model `target` addresses is ready (`rank`: the key's priority, lower first): the
    ledger's wait, or nothing."""
    gate = ondemand.gate()
    if gate is None or target.kind != "inference" or target.model is None:
        return {}
    waited = await gate.hold(target.model, prefix=prefix, alias=alias, priority=rank)
    return {} if waited is None else {META_MODEL_WAIT: waited}


async def _admit(record: KeyRecord, target: requestmodel.Addressed, model: str, request_id: str,
                 now: datetime) -> str | None:
    """Admit the request within the key's limits (its tokens reserved until it ends): the ticket, or 429/503."""
    reserve = target.reservation(proxyinfo.default_max_tokens(model))
    decision = await runtime.gateway().limiter.admit(record, request_id, now, reserve)
    if decision.ok:
        return None if decision.ticket is None else decision.ticket.to_meta()
    if decision.status == 503:
        raise KeyRejected(503, decision.reason or "budget_unavailable", f"The token budget of API key "
                          f"{record.alias} cannot be read (the usage ledger is unreachable); try again shortly",
                          prefix=record.prefix, alias=record.alias, retry_after_s=decision.retry_after_s)
    hint = (f" (this request may use up to {reserve} tokens: a smaller max_tokens fits sooner)"
            if decision.reason in {"tokens_limited", "budget_exceeded"} else "")
    raise KeyRejected(429, decision.reason or "rate_limited", f"API key {record.alias} is over its "
                      f"{decision.limit} limit; retry in {decision.retry_after_s} s{hint}", prefix=record.prefix,
                      alias=record.alias, retry_after_s=decision.retry_after_s)


async def _check_master_request(request: Request) -> None:
    """The master key may call the API-key routes and requestmodel.MASTER_ROUTES (404 for the rest: they need
    LiteLLM's database or a cloud provider); a model in the path must still be model names (one, or LiteLLM's
    batch "a,b"): a crafted path such as /engines/%00/completions would reach LiteLLM's router."""
    route, kind = requestmodel.route_of(request)
    if kind is None and route not in requestmodel.MASTER_ROUTES:
        raise KeyRejected(404, "route_not_served", f"{route} is not served by this stack (it needs LiteLLM's own "
                          "database or a cloud provider): the master key may call the inference routes, "
                          f"/v1/models and {', '.join(sorted(requestmodel.MASTER_ROUTES))}")
    model = request.path_params.get("model")
    if kind != "inference" or not isinstance(model, str) or not model:
        return
    if not all(MODEL_PATTERN.fullmatch(name) for name in model.split(",")):
        raise KeyRejected(400, "model_invalid", f"{model[:80]!r} is not a model name: use a name that "
                          "GET /v1/models lists")


async def _hold_master_request(request: Request) -> dict[str, object]:
    """An on-demand model a master-key request addresses is made ready first, as for API keys; on a
    priority-scheduled model the request's own priority reaches vLLM (confgen/gateway/priority.py)."""
    if requestmodel.route_of(request)[1] != "inference" or (ondemand.gate() is None and not priority.any_scheduled()):
        return {}
    try:
        target = await requestmodel.addressed(request)
    except requestmodel.NotAddressable:
        return {}  # LiteLLM answers it (the master key may send what API keys may not)
    priority.apply(request, target.route, target.model, None, keep_sent=True)
    return await _hold(target, None, "master")
