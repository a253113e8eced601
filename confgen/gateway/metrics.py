"""The gateway's metrics, served on its /metrics (mounted by `mount`, behind LiteLLM's metrics auth).

The gateway modules (keys, auth cache, ledger, limits, the usage callback) call the small functions below;
nothing else touches the metric objects. The request series (requests, tokens, latency, time to first
token) come from our usage callback, which sees every request anyway: LiteLLM's own `prometheus` callback
is not loaded, because it cost about 10 % of the gateway's CPU per request (docs/benchmarks.md). Metrics
live in prometheus_client's default registry. With PROMETHEUS_MULTIPROC_DIR set (several workers) each
worker writes its samples to files there and every scrape, whichever worker answers it, sums them all.

Label values are bounded on purpose: a label made from request input would let clients create
unbounded series. Unknown reasons are recorded as "other".
"""

from __future__ import annotations

import os
import re
from collections.abc import Container
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app, multiprocess

# Reasons the gateway turns a request away before it reaches a model. Others are accepted if they
# look like one of these (lowercase words joined by "_"), so a new check needs no edit here.
REJECTION_REASONS: Final = (
    "missing_key", "invalid_key", "expired_key", "revoked_key", "route_not_allowed", "route_not_served",
    "model_not_allowed", "rate_limited", "tokens_limited", "parallel_limited", "budget_exceeded",
    "auth_unavailable", "budget_unavailable", "model_missing", "model_invalid", "invalid_body",
)
LEDGER_OUTCOMES: Final = ("written", "spooled", "replayed")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")

REJECTED: Final = Counter(
    "confgen_rejected_requests", "Requests the gateway refused before routing them, by reason.", ["reason"],
)
AUTH_CACHE: Final = Counter(
    "confgen_auth_cache_lookups", "Key lookups answered by the in-memory auth cache (hit) or not (miss).",
    ["result"],
)
LEDGER_ROWS: Final = Counter(
    "confgen_ledger_rows",
    "Usage-ledger rows: written to PostgreSQL, spooled to the local file while it was unreachable, "
    "replayed from the spool into PostgreSQL.",
    ["outcome"],
)
# Each worker reports the rows in its own spool; live workers are summed.
SPOOL_ROWS: Final = Gauge(
    "confgen_ledger_spool_rows", "Ledger rows waiting in the local spool for PostgreSQL.",
    multiprocess_mode="livesum",
)

# Per request. `model` is a served model name of this gateway or "other", `api_key_alias` the key's alias
# ("" when the key was not known): clients cannot create series at will.
REQUEST_LABELS: Final = ["model", "api_key_alias"]
REQUESTS: Final = Counter(
    "confgen_requests",
    "Requests the gateway answered, by model, key alias and HTTP status (one per request: retries and "
    "fallbacks inside it are not counted again).",
    [*REQUEST_LABELS, "status_code"],
)
INPUT_TOKENS: Final = Counter("confgen_input_tokens", "Prompt tokens of the requests answered 200.", REQUEST_LABELS)
OUTPUT_TOKENS: Final = Counter("confgen_output_tokens", "Completion tokens of the requests answered 200.",
                               REQUEST_LABELS)
LATENCY_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
LATENCY: Final = Histogram(
    "confgen_request_latency_seconds", "Seconds from the request to its last byte, requests answered 200.",
    REQUEST_LABELS, buckets=LATENCY_BUCKETS,
)
TTFT: Final = Histogram(
    "confgen_time_to_first_token_seconds", "Seconds from the request to its first streamed token (streams).",
    REQUEST_LABELS, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)

# Create the known series at zero so dashboards and alerts see 0, not "no data", before the first event.
for _reason in REJECTION_REASONS:
    REJECTED.labels(reason=_reason)
for _result in ("hit", "miss"):
    AUTH_CACHE.labels(result=_result)
for _outcome in LEDGER_OUTCOMES:
    LEDGER_ROWS.labels(outcome=_outcome)


def reason_label(reason: str) -> str:
    return reason if _REASON.fullmatch(reason) else "other"


def record_rejection(reason: str) -> None:
    """One request refused (401/403/429/503 from our checks), e.g. record_rejection("revoked_key")."""
    REJECTED.labels(reason=reason_label(reason)).inc()


def record_auth_cache(hit: bool) -> None:
    """One key lookup: hit=True when the in-memory cache answered, False when the database was asked."""
    AUTH_CACHE.labels(result="hit" if hit else "miss").inc()


def record_ledger(*, written: int = 0, spooled: int = 0, replayed: int = 0) -> None:
    """Rows just handled by the ledger writer (call once per batch with the batch's counts).

    Counts below 1 are ignored: a metric must never raise on the request path.
    """
    for outcome, rows in (("written", written), ("spooled", spooled), ("replayed", replayed)):
        if rows > 0:
            LEDGER_ROWS.labels(outcome=outcome).inc(rows)


def set_spool_size(rows: int) -> None:
    """Rows this process has in its spool right now (0 once replayed)."""
    SPOOL_ROWS.set(max(rows, 0))


def model_label(model: object, served: Container[str]) -> str:
    """The `model` label: a served model name, else "other"."""
    return model if isinstance(model, str) and model in served else "other"


def record_answer(model: str, alias: str | None, *, prompt_tokens: int, completion_tokens: int,
                  latency_s: float | None, ttft_s: float | None) -> None:
    """One request answered 200 (`model` from `model_label`)."""
    labels = {"model": model, "api_key_alias": alias or ""}
    REQUESTS.labels(**labels, status_code="200").inc()
    if prompt_tokens > 0:
        INPUT_TOKENS.labels(**labels).inc(prompt_tokens)
    if completion_tokens > 0:
        OUTPUT_TOKENS.labels(**labels).inc(completion_tokens)
    if latency_s is not None and latency_s >= 0:
        LATENCY.labels(**labels).observe(latency_s)
    if ttft_s is not None and ttft_s >= 0:
        TTFT.labels(**labels).observe(ttft_s)


def record_failure(model: str, alias: str | None, status: int) -> None:
    """One request the client got an error for (status 400-599; anything else is recorded as 500)."""
    code = status if 400 <= status <= 599 else 500
    REQUESTS.labels(model=model, api_key_alias=alias or "", status_code=str(code)).inc()


def asgi_app() -> Any:
    """The /metrics app: this process's registry, or every worker's files when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return make_asgi_app(registry)
    return make_asgi_app(REGISTRY)
