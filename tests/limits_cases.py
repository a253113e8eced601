"""One table of admission cases for both stores of confgen.gateway.limits: the Lua script (RedisCounters,
run against a real Redis in tests/e2e/test_limits_redis.py) and LocalCounters (tests/unit/test_limits.py).
The two are one policy written twice; these cases are what keeps them one.

A case is a key's limits, the ledger's answer for its budget seed, and steps: admit a request (with the
tokens it reserves) and what it must get, settle a request with its real tokens, move the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confgen.gateway.limits import Limiter, Seed, Ticket
from confgen.keys.record import KeyRecord, Limits

T0 = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)  # 10 s into a minute


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now.timestamp()


@dataclass(frozen=True)
class Admit:
    rid: str
    reserve: int = 0
    expect: str = "ok"  # "ok", or "<reason> <retry after s>", or "<reason> <retry after s> <status>"


@dataclass(frozen=True)
class Settle:
    rid: str
    tokens: int


@dataclass(frozen=True)
class At:
    seconds: float  # from T0


@dataclass(frozen=True)
class Case:
    name: str
    limits: Limits
    steps: tuple[Admit | Settle | At, ...]
    seed: int | None = None  # the ledger's tokens for the budget period; None: the ledger is unreachable
    slot_ttl_s: float = 60.0


def key(limits: Limits, prefix: str = "abcdefghijkl") -> KeyRecord:
    return KeyRecord(prefix=prefix, key_hash="0" * 64, alias="a", created_at=T0 - timedelta(hours=1), limits=limits)


DAY = 86400
CASES: tuple[Case, ...] = (
    Case("rpm: a fixed one-minute window, Retry-After to its end", Limits(rpm=3), (
        Admit("a"), Admit("b"), Admit("c"), Admit("d", expect="rate_limited 50"), At(50), Admit("e"))),
    Case("rpm: refused requests do not use up the window", Limits(rpm=1), (
        Admit("a"), Admit("x1", expect="rate_limited 50"), Admit("x2", expect="rate_limited 50"), At(60),
        Admit("b"), Admit("c", expect="rate_limited 50"))),
    Case("parallel: slots freed by settle or by their deadline", Limits(max_parallel=2), (
        Admit("a"), Admit("b"), Admit("c", expect="parallel_limited 1"), Settle("a", 10), Admit("d"),
        At(29), Admit("e", expect="parallel_limited 1"), At(31), Admit("f")), slot_ttl_s=30),
    Case("tpm: tokens are reserved at admission and settled to the real usage", Limits(tpm=100), (
        Admit("a", 60), Admit("b", 60, expect="tokens_limited 50"), Settle("a", 20), Admit("b2", 60),
        Admit("c", 30, expect="tokens_limited 50"), At(50), Admit("d", 90))),
    Case("tpm: a request larger than the limit runs alone", Limits(tpm=50), (
        Admit("a", 80), Admit("b", 1, expect="tokens_limited 50"), Settle("a", 10), Admit("c", 40),
        Admit("d", 1, expect="tokens_limited 50"))),
    Case("tpm: a burst of 12 spends at most the limit plus one reservation", Limits(tpm=120), (
        Admit("r0", 70), *(Admit(f"r{i}", 70, expect="tokens_limited 50") for i in range(1, 12)),
        Settle("r0", 40), Admit("r12", 70), Admit("r13", 70, expect="tokens_limited 50"))),
    Case("tpm: a settlement lands in the minute of its admission", Limits(tpm=100), (
        At(45), Admit("a", 90), At(70), Settle("a", 90), Admit("b", 90), Admit("c", 20, expect="tokens_limited 40"))),
    Case("tpm: a second settlement of one request changes nothing", Limits(tpm=100), (
        Admit("a", 50), Settle("a", 10), Settle("a", 10), Admit("b", 90), Admit("c", 1, expect="tokens_limited 50"))),
    Case("budget: seeded from the ledger, reservations count, Retry-After to the period's end",
         Limits(budget_tokens=1000, budget_period_s=DAY), (
        Admit("a", 5), Admit("b", 10, expect=f"budget_exceeded {23 * 3600}"), Settle("a", 5),
        Admit("c", 5), Admit("d", 1, expect=f"budget_exceeded {23 * 3600}"), At(23 * 3600),
        Admit("e", 5)), seed=990),
    Case("budget: refused (503) when the ledger cannot be read", Limits(budget_tokens=10, budget_period_s=60, rpm=5),
         (Admit("a", 1, expect="budget_unavailable 5 503"),), seed=None),
    Case("limits together: the first limit reached refuses, and refusals take nothing",
         Limits(rpm=2, tpm=100, max_parallel=1), (
        Admit("a", 30), Admit("b", 30, expect="parallel_limited 1"), Settle("a", 30), Admit("c", 30),
        Settle("c", 30), Admit("d", 30, expect="rate_limited 50"), At(50), Admit("e", 30))),
)


@dataclass
class Run:
    outcomes: list[str] = field(default_factory=list)
    tickets: dict[str, Ticket] = field(default_factory=dict)


def _seed_for(case: Case, seen: list[datetime]) -> Seed:
    async def seed(prefix: str, since: datetime) -> int:
        seen.append(since)
        if case.seed is None:
            raise ConnectionError("ledger down")
        return case.seed

    return seed


async def play(case: Case, make: Callable[[Seed, Clock, float], Limiter], prefix: str = "abcdefghijkl") -> list[str]:
    """Run the case's steps on the limiter `make(seed, clock, slot_ttl_s)` returns; the outcome of each admit."""
    clock = Clock()
    seen: list[datetime] = []
    limiter = make(_seed_for(case, seen), clock, case.slot_ttl_s)
    record, run = key(case.limits, prefix), Run()
    for step in case.steps:
        if isinstance(step, At):
            clock.now = T0 + timedelta(seconds=step.seconds)
        elif isinstance(step, Settle):
            await limiter.settle(run.tickets[step.rid], step.tokens)
        else:
            decision = await limiter.admit(record, step.rid, clock.now, step.reserve)
            if decision.ok:
                assert decision.ticket is not None
                run.tickets[step.rid] = decision.ticket
                run.outcomes.append("ok")
            else:
                status = "" if decision.status == 429 else f" {decision.status}"
                run.outcomes.append(f"{decision.reason} {decision.retry_after_s}{status}")
    return run.outcomes


def expected(case: Case) -> list[str]:
    return [step.expect for step in case.steps if isinstance(step, Admit)]
