"""confgen.gateway.limits with the per-instance counters (the Redis ones run the same cases in
tests/e2e/test_limits_redis.py): the admission table of tests/limits_cases.py, and what only the
Limiter does (seeding, the last known spend, fallback from an unreachable Redis)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from confgen.gateway.limits import Limiter, RedisCounters, Ticket
from confgen.keys.record import Limits
from tests.limits_cases import CASES, T0, Case, Clock, expected, key, play


def local(seed, clock: Clock, slot_ttl_s: float) -> Limiter:  # type: ignore[no-untyped-def]
    return Limiter(None, seed=seed, slot_ttl_s=slot_ttl_s, clock=clock)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_admission_table_local(case: Case) -> None:
    assert asyncio.run(play(case, local)) == expected(case)


def test_budget_is_seeded_from_the_ledger_once_per_period() -> None:
    calls: list[datetime] = []

    async def seed(prefix: str, since: datetime) -> int:
        calls.append(since)
        return 0

    record = key(Limits(budget_tokens=1000, budget_period_s=86400))
    lim = Limiter(None, seed=seed, clock=Clock())

    async def run() -> None:
        for i in range(3):
            assert (await lim.admit(record, f"r{i}", T0, 10)).ok
        assert (await lim.admit(record, "next", T0 + timedelta(hours=23), 10)).ok

    asyncio.run(run())
    assert calls == [record.created_at, record.created_at + timedelta(days=1)]


def test_lost_counters_and_an_unreadable_ledger_count_from_the_last_spend_seen(
        caplog: pytest.LogCaptureFixture) -> None:
    answers: list[int | Exception] = [990, ConnectionError("ledger down")]

    async def seed(prefix: str, since: datetime) -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    record = key(Limits(budget_tokens=1000, budget_period_s=86400))
    lim = Limiter(None, seed=seed, clock=Clock())

    async def run() -> list[bool]:
        first = (await lim.admit(record, "a", T0, 5)).ok  # 995 used and reserved
        lim.local._values.clear()  # the counters are gone (a Redis restart): the ledger must be read again
        return [first, (await lim.admit(record, "b", T0, 5)).ok, (await lim.admit(record, "c", T0, 1)).ok]

    assert asyncio.run(run()) == [True, True, False]
    assert "counting from the last spend seen here (995 tokens)" in caplog.text


def test_ticket_meta_round_trip() -> None:
    ticket = Ticket("abcdefghijkl", "rid", "redis", True, False, 7, 29_000_000, 64)
    assert Ticket.from_meta(ticket.to_meta()) == ticket
    plain = Ticket("p", "r", "local", False, True, None)
    assert Ticket.from_meta(plain.to_meta()) == plain
    assert Ticket.from_meta("garbage") is None
    assert Ticket.from_meta("p|r|local|||x|1|2") is None


def test_unreachable_redis_falls_back_to_per_instance_limits(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "confgen.gateway")
    shared = RedisCounters(f"unix://{tmp_path}/no-redis.sock", "t:")
    lim = Limiter(shared, seed=None, clock=Clock())  # type: ignore[arg-type]
    record = key(Limits(rpm=2))

    async def run() -> list[bool]:
        return [(await lim.admit(record, f"r{i}", T0)).ok for i in range(3)]

    assert asyncio.run(run()) == [True, True, False]
    assert lim.shared_up is False
    assert caplog.text.count("Redis unavailable") == 1
    assert "counted per gateway instance" in caplog.text
