"""confgen.gateway.limits with the per-instance counters (the Redis ones run in tests/e2e): the same
admission rules, Retry-After values, slots that free themselves, budgets seeded from the ledger."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from confgen.gateway.limits import Limiter, RedisCounters, Ticket
from confgen.keys.record import KeyRecord, Limits

T0 = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)  # 10 s into a minute


def key(**limits: int) -> KeyRecord:
    return KeyRecord(prefix="abcdefghijkl", key_hash="0" * 64, alias="a", created_at=T0 - timedelta(hours=1),
                     limits=Limits(**limits))  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now.timestamp()


async def no_seed(prefix: str, since: datetime) -> int:
    raise AssertionError("no budget here")


def limiter(clock: Clock | None = None, seed: object = no_seed, slot_ttl_s: float = 60.0) -> Limiter:
    return Limiter(None, seed=seed, slot_ttl_s=slot_ttl_s, clock=clock or Clock(T0))  # type: ignore[arg-type]


def admit(lim: Limiter, record: KeyRecord, rid: str, now: datetime = T0):  # type: ignore[no-untyped-def]
    return asyncio.run(lim.admit(record, rid, now))


def test_rpm_fixed_minute_window_with_retry_after() -> None:
    lim, record = limiter(), key(rpm=3)
    assert [admit(lim, record, f"r{i}").ok for i in range(3)] == [True, True, True]
    refused = admit(lim, record, "r4")
    assert (refused.ok, refused.reason, refused.limit, refused.retry_after_s) == (False, "rate_limited", "rpm", 50)
    assert admit(lim, record, "r5", T0 + timedelta(seconds=50)).ok  # the next minute


def test_refused_requests_do_not_use_up_the_window() -> None:
    lim, record = limiter(), key(rpm=1)
    assert admit(lim, record, "a").ok
    for i in range(5):
        assert not admit(lim, record, f"x{i}").ok
    assert admit(lim, record, "b", T0 + timedelta(minutes=1)).ok
    assert not admit(lim, record, "c", T0 + timedelta(minutes=1)).ok


def test_parallel_slots_are_released_by_settle_or_expire() -> None:
    clock = Clock(T0)
    lim, record = limiter(clock, slot_ttl_s=30), key(max_parallel=2)
    first, second = admit(lim, record, "a"), admit(lim, record, "b")
    assert first.ok
    assert second.ok
    third = admit(lim, record, "c")
    assert (third.ok, third.reason, third.retry_after_s) == (False, "parallel_limited", 1)
    assert first.ticket is not None
    asyncio.run(lim.settle(first.ticket, 10))
    assert admit(lim, record, "d").ok
    # "b" and "d" never end: after the slot deadline they free themselves.
    assert not admit(lim, record, "e", T0 + timedelta(seconds=29)).ok
    assert admit(lim, record, "f", T0 + timedelta(seconds=31)).ok


def test_tpm_counts_tokens_when_requests_end() -> None:
    clock = Clock(T0)
    lim, record = limiter(clock), key(tpm=100)
    ticket = admit(lim, record, "a").ticket
    assert ticket is not None
    assert ticket.tpm
    assert admit(lim, record, "b").ok  # tokens are not known before the end
    asyncio.run(lim.settle(ticket, 100))
    refused = admit(lim, record, "c")
    assert (refused.ok, refused.reason, refused.retry_after_s) == (False, "tokens_limited", 50)
    assert admit(lim, record, "d", T0 + timedelta(minutes=1)).ok


def test_budget_is_seeded_from_the_ledger_once_per_period() -> None:
    calls: list[datetime] = []

    async def seed(prefix: str, since: datetime) -> int:
        calls.append(since)
        return 990

    clock = Clock(T0)
    record = key(budget_tokens=1000, budget_period_s=86400)
    lim = limiter(clock, seed)
    decision = admit(lim, record, "a")
    assert decision.ok
    assert decision.ticket is not None
    assert decision.ticket.budget_window == 0
    assert calls == [record.created_at]
    asyncio.run(lim.settle(decision.ticket, 10))
    refused = admit(lim, record, "b")
    assert (refused.ok, refused.reason, refused.limit) == (False, "budget_exceeded", "token budget")
    assert refused.retry_after_s == 23 * 3600  # the period ends a day after the key's creation
    assert len(calls) == 1
    assert admit(lim, record, "c", T0 + timedelta(hours=23)).ok  # a new period, seeded again
    assert len(calls) == 2


def test_budget_not_checked_when_the_ledger_cannot_be_read(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(prefix: str, since: datetime) -> int:
        raise ConnectionError("down")

    lim = limiter(seed=broken)
    decision = admit(lim, key(budget_tokens=1, budget_period_s=60, rpm=5), "a")
    assert decision.ok
    assert decision.ticket is not None
    assert decision.ticket.budget_window is None
    assert "cannot read the budget used by key abcdefghijkl" in caplog.text


def test_ticket_meta_round_trip() -> None:
    ticket = Ticket("abcdefghijkl", "rid", "redis", True, False, 7)
    assert Ticket.from_meta(ticket.to_meta()) == ticket
    assert Ticket.from_meta(Ticket("p", "r", "local", False, True, None).to_meta()) == Ticket("p", "r", "local",
                                                                                              False, True, None)
    assert Ticket.from_meta("garbage") is None


def test_unreachable_redis_falls_back_to_per_instance_limits(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "confgen.gateway")
    shared = RedisCounters(f"unix://{tmp_path}/no-redis.sock", "t:")
    lim = Limiter(shared, seed=no_seed, clock=Clock(T0))
    record = key(rpm=2)

    async def run() -> list[bool]:
        return [(await lim.admit(record, f"r{i}", T0)).ok for i in range(3)]

    assert asyncio.run(run()) == [True, True, False]
    assert lim.shared_up is False
    assert caplog.text.count("Redis unavailable") == 1
    assert "counted per gateway instance" in caplog.text
