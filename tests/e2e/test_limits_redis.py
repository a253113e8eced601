"""The admission table of tests/limits_cases.py on the Lua script, against the machine's Redis: the same
cases tests/unit/test_limits.py runs on the per-instance counters, so the two stores stay one policy."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from confgen.gateway.limits import Limiter, RedisCounters
from tests.e2e.keys_support import redis_namespace
from tests.limits_cases import CASES, Case, Clock, expected, play

pytestmark = pytest.mark.e2e
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with redis_namespace() as ns:
        yield ns


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_admission_table_redis(case: Case, namespace: str) -> None:
    made: list[Limiter] = []

    def make(seed, clock: Clock, slot_ttl_s: float) -> Limiter:  # type: ignore[no-untyped-def]
        made.append(Limiter(RedisCounters(REDIS, namespace), seed=seed, slot_ttl_s=slot_ttl_s, clock=clock))
        return made[0]

    assert asyncio.run(play(case, make, prefix=secrets.token_hex(6))) == expected(case)
    assert made[0].shared_up is True  # every admission ran the Lua script (no fallback to local counters)
