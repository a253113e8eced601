"""Per-key limits shared by every gateway instance through Redis: requests and tokens per minute, requests
in flight, and a token budget per period.

- rpm, tpm: fixed one-minute windows (`...:rpm:<minute>`); tokens count when a request ends.
- max parallel: a sorted set of the request ids in flight, each with a deadline (the request timeout), so
  a slot whose end event never comes (a killed client, a crash) frees itself.
- budget: tokens in the key's current period (periods start at the key's creation). The counter is seeded
  from the ledger the first time a period is seen (or after Redis lost it).
One admission is one Lua script (one round trip); keys of one API key share a hash tag (`{prefix}`).
When Redis is unreachable, each instance counts on its own (LocalCounters) and says so in its log, and
Redis is tried again after `retry_s`: a gateway keeps serving, limits hold per instance meanwhile.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from confgen.keys.record import KeyRecord, Limits

log = logging.getLogger("confgen.gateway")
LIMITS = {1: "rpm", 2: "tpm", 3: "max parallel", 4: "token budget"}
# The ledger's and the metrics' names for each (confgen.gateway.metrics.REJECTION_REASONS).
REASONS = {1: "rate_limited", 2: "tokens_limited", 3: "parallel_limited", 4: "budget_exceeded"}
NEED_SEED = -1
Seed = Callable[[str, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Ticket:
    """What the end of a request settles: its parallel slot, its tokens in the tpm and budget counters."""

    prefix: str
    rid: str
    store: str  # "redis" or "local": settle where it was admitted
    parallel: bool
    tpm: bool
    budget_window: int | None

    def to_meta(self) -> str:
        window = "" if self.budget_window is None else str(self.budget_window)
        return "|".join((self.prefix, self.rid, self.store, "1" if self.parallel else "", "1" if self.tpm else "",
                         window))

    @classmethod
    def from_meta(cls, text: str) -> Ticket | None:
        parts = text.split("|")
        if len(parts) != 6:
            return None
        prefix, rid, store, parallel, tpm, window = parts
        return cls(prefix, rid, store, parallel == "1", tpm == "1", int(window) if window else None)


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str | None = None
    limit: str | None = None
    retry_after_s: int = 0
    ticket: Ticket | None = None


@dataclass(frozen=True)
class Admission:
    """One admission's inputs, the same for both stores."""

    prefix: str
    limits: Limits
    rid: str
    now_ms: int
    slot_ttl_ms: int
    budget_window: int | None
    budget_left_ms: int
    seed: int  # tokens already used in the period; -1: not known yet

    @property
    def minute(self) -> int:
        return self.now_ms // 60_000

    @property
    def minute_left_ms(self) -> int:
        return 60_000 - self.now_ms % 60_000


class Store(Protocol):
    name: str

    async def admit(self, a: Admission) -> tuple[int, int]: ...

    async def settle(self, ticket: Ticket, tokens: int, now_ms: int) -> None: ...


def _keys(ns: str, prefix: str, minute: int, window: int | None) -> list[str]:
    base = f"{ns}{{{prefix}}}"
    return [f"{base}:rpm:{minute}", f"{base}:tpm:{minute}", f"{base}:par", f"{base}:budget:{window or 0}"]


ADMIT = """
local now = tonumber(ARGV[5])
local budget = tonumber(ARGV[4])
if budget > 0 then
  local used = redis.call('GET', KEYS[4])
  if not used then
    local seed = tonumber(ARGV[10])
    if seed < 0 then return {-1, 0} end
    redis.call('SET', KEYS[4], seed, 'PX', ARGV[9])
    used = seed
  end
  if tonumber(used) >= budget then return {4, tonumber(ARGV[9])} end
end
local tpm = tonumber(ARGV[2])
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return {2, tonumber(ARGV[8])} end
local par = tonumber(ARGV[3])
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= par then return {3, 1000} end
end
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  if tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return {1, tonumber(ARGV[8])} end
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]) + 1000)
end
if par > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return {0, 0}
"""

SETTLE = """
if ARGV[4] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  if ARGV[5] == '1' then
    redis.call('INCRBY', KEYS[2], tokens)
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  if ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], tokens) end
end
return 1
"""


class RedisCounters:
    name = "redis"

    def __init__(self, url: str, namespace: str, timeout_s: float = 0.5) -> None:
        self.url = url
        self.ns = namespace
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._admit = self._client.register_script(ADMIT)
        self._settle = self._client.register_script(SETTLE)

    async def admit(self, a: Admission) -> tuple[int, int]:
        lim = a.limits
        keys = _keys(self.ns, a.prefix, a.minute, a.budget_window)
        args: list[int | str] = [lim.rpm or 0, lim.tpm or 0, lim.max_parallel or 0, lim.budget_tokens or 0,
                                 a.now_ms, a.rid, a.slot_ttl_ms, a.minute_left_ms, max(a.budget_left_ms, 1), a.seed]
        code, retry_ms = await self._admit(keys=keys, args=args)
        return int(code), int(retry_ms)

    async def settle(self, ticket: Ticket, tokens: int, now_ms: int) -> None:
        _, tpm, par, budget = _keys(self.ns, ticket.prefix, now_ms // 60_000, ticket.budget_window)
        args: list[int | str] = [ticket.rid, tokens, 120_000, "1" if ticket.parallel else "", "1" if ticket.tpm else "",
                "1" if ticket.budget_window is not None else ""]
        await self._settle(keys=[par, tpm, budget], args=args)


class LocalCounters:
    """The same counters in this process's memory: per-instance limits while Redis is down."""

    name = "local"

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, int]] = {}  # key -> (value, expires at ms)
        self._slots: dict[str, dict[str, int]] = {}  # key -> {rid: deadline ms}

    def _get(self, key: str, now_ms: int) -> int | None:
        found = self._values.get(key)
        if found is None or found[1] <= now_ms:
            self._values.pop(key, None)
            return None
        return found[0]

    def _purge(self, now_ms: int) -> None:
        if len(self._values) > 10_000:
            self._values = {k: v for k, v in self._values.items() if v[1] > now_ms}

    async def admit(self, a: Admission) -> tuple[int, int]:
        lim = a.limits
        rpm_key, tpm_key, par_key, budget_key = _keys("", a.prefix, a.minute, a.budget_window)
        now = a.now_ms
        self._purge(now)
        if lim.budget_tokens:
            used = self._get(budget_key, now)
            if used is None:
                if a.seed < 0:
                    return NEED_SEED, 0
                used = a.seed
                self._values[budget_key] = (used, now + max(a.budget_left_ms, 1))
            if used >= lim.budget_tokens:
                return 4, a.budget_left_ms
        if lim.tpm and (self._get(tpm_key, now) or 0) >= lim.tpm:
            return 2, a.minute_left_ms
        slots = self._slots.setdefault(par_key, {})
        if lim.max_parallel:
            for rid in [r for r, deadline in slots.items() if deadline <= now]:
                del slots[rid]
            if len(slots) >= lim.max_parallel:
                return 3, 1000
        if lim.rpm:
            count = self._get(rpm_key, now) or 0
            if count >= lim.rpm:
                return 1, a.minute_left_ms
            self._values[rpm_key] = (count + 1, now + a.minute_left_ms + 1000)
        if lim.max_parallel:
            slots[a.rid] = now + a.slot_ttl_ms
        return 0, 0

    async def settle(self, ticket: Ticket, tokens: int, now_ms: int) -> None:
        _, tpm_key, par_key, budget_key = _keys("", ticket.prefix, now_ms // 60_000, ticket.budget_window)
        if ticket.parallel:
            self._slots.get(par_key, {}).pop(ticket.rid, None)
        if tokens <= 0:
            return
        if ticket.tpm:
            value = self._get(tpm_key, now_ms) or 0
            self._values[tpm_key] = (value + tokens, now_ms + 120_000)
        if ticket.budget_window is not None:
            found = self._values.get(budget_key)
            if found is not None:
                self._values[budget_key] = (found[0] + tokens, found[1])


class Limiter:
    def __init__(self, shared: Store | None, *, seed: Seed, slot_ttl_s: float = 630.0, retry_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.local = LocalCounters()
        self._seed = seed
        self.slot_ttl_ms = int(slot_ttl_s * 1000)
        self.retry_s = retry_s
        self._clock = clock
        self._shared_down_until = 0.0
        self.shared_up: bool | None = None

    def _store(self) -> Store:
        if self.shared is not None and self._clock() >= self._shared_down_until:
            return self.shared
        return self.local

    def _shared_failed(self, exc: Exception) -> None:
        if self.shared_up is not False:
            log.warning("Redis unavailable (%s): rate limits are counted per gateway instance until it is back",
                        exc)
        self.shared_up = False
        self._shared_down_until = self._clock() + self.retry_s

    async def admit(self, record: KeyRecord, rid: str, now: datetime) -> Decision:
        lim = record.limits
        window, left_ms, start = None, 0, now
        if lim.budget_tokens and lim.budget_period_s:
            window, end = record.period_window(now)
            left_ms = int((end - now).total_seconds() * 1000)
            start = end - timedelta(seconds=lim.budget_period_s)
        a = Admission(record.prefix, lim, rid, int(now.timestamp() * 1000), self.slot_ttl_ms, window, left_ms, -1)
        code, retry_ms, store = await self._run(a)
        if code == NEED_SEED:
            try:
                seed = await self._seed(record.prefix, start)
            except Exception as exc:  # no ledger: admit without the budget this time
                log.warning("cannot read the budget used by key %s from the ledger (%s): not checked for this "
                            "request", record.prefix, exc)
                a = replace(a, limits=replace(lim, budget_tokens=None), budget_window=None)
                window = None
            else:
                a = replace(a, seed=seed)
            code, retry_ms, store = await self._run(a)
        if code != 0:
            return Decision(False, REASONS.get(code, "rate_limited"), LIMITS.get(code, "rate"),
                            max(1, math.ceil(retry_ms / 1000)))
        ticket = Ticket(record.prefix, rid, store.name, bool(lim.max_parallel), bool(lim.tpm), window)
        return Decision(True, ticket=ticket)

    async def _run(self, a: Admission) -> tuple[int, int, Store]:
        store = self._store()
        if store is self.shared:
            try:
                code, retry_ms = await store.admit(a)
                if self.shared_up is False:
                    log.warning("Redis is back: rate limits are shared again")
                self.shared_up = True
                return code, retry_ms, store
            except (RedisError, OSError) as exc:
                self._shared_failed(exc)
                store = self.local
        code, retry_ms = await store.admit(a)
        return code, retry_ms, store

    async def settle(self, ticket: Ticket, tokens: int) -> None:
        now_ms = int(self._clock() * 1000)
        if ticket.store == "local" or self.shared is None:
            await self.local.settle(ticket, tokens, now_ms)
            return
        try:
            await self.shared.settle(ticket, tokens, now_ms)
        except (RedisError, OSError) as exc:
            self._shared_failed(exc)

