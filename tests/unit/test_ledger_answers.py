"""A request retried on another replica, or answered by a fallback model, ends in several ledger events under
one request id (LiteLLM logs each failed attempt): its row is the answer when there is one."""

from __future__ import annotations

from datetime import UTC, datetime

from confgen.ledger.row import UsageRow
from confgen.ledger.writer import INSERT, one_per_request

T = datetime(2026, 11, 25, tzinfo=UTC)


def row(request_id: str, status: int, tokens: int = 0) -> UsageRow:
    return UsageRow(request_id=request_id, ts=T, status=status, completion_tokens=tokens)


def test_the_answer_wins_whatever_the_order() -> None:
    batch = [row("a", 500), row("b", 429), row("a", 200, 7), row("c", 200, 3), row("b", 200, 5), row("c", 500)]
    kept = one_per_request(batch)
    assert [(r.request_id, r.status, r.completion_tokens) for r in kept] == [("a", 200, 7), ("b", 200, 5),
                                                                             ("c", 200, 3)]


def test_a_request_that_never_got_an_answer_keeps_its_first_failure() -> None:
    assert [(r.request_id, r.status) for r in one_per_request([row("a", 503), row("a", 500)])] == [("a", 503)]


def test_rows_already_written_are_upgraded_only_to_an_answer() -> None:
    """A replayed spool or a late failure event never turns an answered row back into an error."""
    assert "ON CONFLICT (request_id) DO UPDATE SET" in INSERT
    assert "EXCLUDED.completion_tokens" in INSERT
    assert INSERT.endswith("WHERE confgen_usage.status <> 200 AND EXCLUDED.status = 200")
