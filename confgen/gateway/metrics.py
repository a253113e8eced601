"""Our own gateway metrics, served on the gateway's /metrics next to LiteLLM's `litellm_*` series.

The gateway modules (keys, auth cache, ledger, limits) call the small functions below; nothing else
touches the metric objects. Metrics live in prometheus_client's default registry, which LiteLLM's
`/metrics` serves. With PROMETHEUS_MULTIPROC_DIR set (the local launcher always sets it; the gateway
container with several workers) each worker writes its samples to files there and every scrape,
whichever worker answers it, sums them all.

Label values are bounded on purpose: a label made from request input would let clients create
unbounded series. Unknown reasons are recorded as "other".
"""

from __future__ import annotations

import re
from typing import Final

from prometheus_client import Counter, Gauge

# Reasons the gateway turns a request away before it reaches a model. Others are accepted if they
# look like one of these (lowercase words joined by "_"), so a new check needs no edit here.
REJECTION_REASONS: Final = (
    "missing_key", "invalid_key", "expired_key", "revoked_key", "route_not_allowed", "model_not_allowed",
    "rate_limited", "tokens_limited", "parallel_limited", "budget_exceeded", "auth_unavailable",
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
