"""What `confgen usage` reports from the ledger: requests, errors, tokens and latency percentiles per
key, model or day (latency of successful requests only: a 401 answered in a millisecond says nothing
about the models)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

GROUPS = {
    "key": "COALESCE(key_alias || ' (' || key_prefix || ')', key_alias, key_prefix, '(no key)')",
    "model": "COALESCE(model, '(none)')",
    "day": "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
_OK = "FILTER (WHERE status < 400)"


@dataclass(frozen=True)
class UsageLine:
    group: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


def query(by: str) -> str:
    group = GROUPS[by]  # a fixed expression chosen by name, never user text
    pct = ", ".join(f"percentile_cont({p}) WITHIN GROUP (ORDER BY latency_ms) {_OK}" for p in (0.5, 0.95, 0.99))
    return (f"SELECT {group} AS grp, count(*), count(*) FILTER (WHERE status >= 400), "  # noqa: S608
            f"COALESCE(sum(prompt_tokens), 0), COALESCE(sum(completion_tokens), 0), {pct} "
            "FROM confgen_usage WHERE ts >= %s GROUP BY grp ORDER BY grp")


def usage(conn: psycopg.Connection, since: datetime, by: str) -> list[UsageLine]:
    rows = conn.execute(query(by).encode(), (since,)).fetchall()
    return [UsageLine(str(g), int(n), int(e), int(p), int(c), *(_ms(x) for x in pcts)) for g, n, e, p, c, *pcts in rows]


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)
