"""Per-key limits shared by every gateway instance through Redis: requests and tokens per minute, requests
in flight, and a token budget per period.

- rpm, tpm: fixed one-minute windows (`...:rpm:<minute>`).
- Tokens are reserved when a request is admitted and settled when it ends: admission reserves the request's
  worst case (`Addressed.reservation` in confgen/gateway/requestmodel.py: its prompt over-estimated plus
  its max_tokens), and the end replaces the reservation by the real usage, in the counters of the minute
  and period it was admitted in. A request is admitted when the tokens used and reserved plus its own
  reservation fit the limit, or when nothing is used yet (so one request larger than the limit can run
  alone): a burst of concurrent requests spends at most the limit plus one reservation.
- max parallel: a sorted set of the request ids in flight, each with a deadline (the request timeout), so
  a slot whose end event never comes (a killed client, a crash) frees itself.
- budget: tokens in the key's current period (periods start at the key's creation). The counter is seeded
  from the ledger the first time a period is seen (or after Redis lost it). When the ledger cannot be
  read then, the last spend this instance saw for that period is used; without one the request is
  refused (503): a budget is never admitted unchecked.
One admission is one Lua script (one round trip); keys of one API key share a hash tag (`{prefix}`).
The Lua script and LocalCounters are one policy written twice: tests/limits_cases.py drives both.
When Redis is unreachable, each instance counts on its own (LocalCounters) and says so in its log, and
Redis is tried again after `retry_s`: a gateway keeps serving, limits hold per instance meanwhile.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
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
TPM_TTL_MS = 120_000  # a minute's tpm counter outlives the minute, so late settlements still find it
SETTLED_MEMORY = 4096  # request ids whose settlement this instance remembers (a second settle is a no-op)
Seed = Callable[[str, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Ticket:
    """What the end of a request settles: its parallel slot, and its reserved tokens in the tpm counter of
    the minute it was admitted in and in the budget of its period."""

    prefix: str
    rid: str
    store: str  # "redis" or "local": settle where it was admitted
    parallel: bool
    tpm: bool
    budget_window: int | None
    minute: int = 0
    reserved: int = 0

    def to_meta(self) -> str:
        window = "" if self.budget_window is None else str(self.budget_window)
        return "|".join((self.prefix, self.rid, self.store, "1" if self.parallel else "", "1" if self.tpm else "",
                         window, str(self.minute), str(self.reserved)))

    @classmethod
    def from_meta(cls, text: str) -> Ticket | None:
        parts = text.split("|")
        if len(parts) != 8:
            return None
        prefix, rid, store, parallel, tpm, window, minute, reserved = parts
        try:
            return cls(prefix, rid, store, parallel == "1", tpm == "1", int(window) if window else None,
                       int(minute), int(reserved))
        except ValueError:
            return None


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str | None = None
    limit: str | None = None
    retry_after_s: int = 0
    ticket: Ticket | None = None
    status: int = 429


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
    reserve: int = 0  # tokens this request may use at most (settled to the real usage when it ends)

    @property
    def minute(self) -> int:
        return self.now_ms // 60_000

    @property
    def minute_left_ms(self) -> int:
        return 60_000 - self.now_ms % 60_000


class Store(Protocol):
    name: str

    async def admit(self, a: Admission) -> tuple[int, int, int | None]:
        """(code: 0 admitted, NEED_SEED, or a LIMITS key; retry after ms; budget used, reservation included)."""
        ...

    async def settle(self, ticket: Ticket, tokens: int) -> None: ...


def _keys(ns: str, prefix: str, minute: int, window: int | None) -> list[str]:
    base = f"{ns}{{{prefix}}}"
    return [f"{base}:rpm:{minute}", f"{base}:tpm:{minute}", f"{base}:par", f"{base}:budget:{window or 0}"]


def _over(used: int, reserve: int, limit: int) -> bool:
    """The admission rule of tokens (Lua: the same test in ADMIT)."""
    return used >= limit or (used > 0 and used + reserve > limit)


ADMIT = """
local now = tonumber(ARGV[5])
local reserve = tonumber(ARGV[11])
local budget = tonumber(ARGV[4])
local used = nil
if budget > 0 then
  used = redis.call('GET', KEYS[4])
  if not used then
    local seed = tonumber(ARGV[10])
    if seed < 0 then return {-1, 0, -1} end
    redis.call('SET', KEYS[4], seed, 'PX', ARGV[9])
    used = seed
  end
  used = tonumber(used)
  if used >= budget or (used > 0 and used + reserve > budget) then return {4, tonumber(ARGV[9]), used} end
end
local tpm = tonumber(ARGV[2])
if tpm > 0 then
  local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
  if spent >= tpm or (spent > 0 and spent + reserve > tpm) then return {2, tonumber(ARGV[8]), used or -1} end
end
local par = tonumber(ARGV[3])
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= par then return {3, 1000, used or -1} end
end
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  if tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return {1, tonumber(ARGV[8]), used or -1} end
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]) + 1000)
end
if par > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
if reserve > 0 then
  if tpm > 0 then
    redis.call('INCRBY', KEYS[2], reserve)
    redis.call('PEXPIRE', KEYS[2], ARGV[12])
  end
  if budget > 0 then used = redis.call('INCRBY', KEYS[4], reserve) end
end
return {0, 0, used or -1}
"""

SETTLE = """
if ARGV[3] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local delta = tonumber(ARGV[2])
if delta ~= 0 then
  if ARGV[4] == '1' then
    if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], delta)
    elseif delta > 0 then redis.call('SET', KEYS[2], delta, 'PX', ARGV[6]) end
  end
  if ARGV[5] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], delta) end
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

    async def admit(self, a: Admission) -> tuple[int, int, int | None]:
        lim = a.limits
        keys = _keys(self.ns, a.prefix, a.minute, a.budget_window)
        args: list[int | str] = [lim.rpm or 0, lim.tpm or 0, lim.max_parallel or 0, lim.budget_tokens or 0,
                                 a.now_ms, a.rid, a.slot_ttl_ms, a.minute_left_ms, max(a.budget_left_ms, 1), a.seed,
                                 a.reserve, TPM_TTL_MS]
        code, retry_ms, used = await self._admit(keys=keys, args=args)
        return int(code), int(retry_ms), None if int(used) < 0 else int(used)

    async def settle(self, ticket: Ticket, tokens: int) -> None:
        _, tpm, par, budget = _keys(self.ns, ticket.prefix, ticket.minute, ticket.budget_window)
        args: list[int | str] = [ticket.rid, tokens - ticket.reserved, "1" if ticket.parallel else "",
                                 "1" if ticket.tpm else "", "1" if ticket.budget_window is not None else "",
                                 TPM_TTL_MS]
        await self._settle(keys=[par, tpm, budget], args=args)


class LocalCounters:
    """The same counters in this process's memory: per-instance limits while Redis is down."""

    name = "local"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
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

    def _budget_used(self, a: Admission, key: str) -> int | None:
        """Tokens used in the budget period (seeded on first sight); None: a seed is needed."""
        used = self._get(key, a.now_ms)
        if used is None and a.seed >= 0:
            used = a.seed
            self._values[key] = (used, a.now_ms + max(a.budget_left_ms, 1))
        return used

    def _refusal(self, a: Admission, keys: list[str], used: int | None) -> tuple[int, int] | None:
        """(code, retry after ms) of the first limit the request is over, as ADMIT checks them; None: admit."""
        lim = a.limits
        rpm_key, tpm_key, par_key, _ = keys
        now = a.now_ms
        if lim.budget_tokens and used is not None and _over(used, a.reserve, lim.budget_tokens):
            return 4, a.budget_left_ms
        if lim.tpm and _over(self._get(tpm_key, now) or 0, a.reserve, lim.tpm):
            return 2, a.minute_left_ms
        slots = self._slots.setdefault(par_key, {})
        for rid in [r for r, deadline in slots.items() if deadline <= now]:
            del slots[rid]
        if lim.max_parallel and len(slots) >= lim.max_parallel:
            return 3, 1000
        if lim.rpm and (self._get(rpm_key, now) or 0) >= lim.rpm:
            return 1, a.minute_left_ms
        return None

    async def admit(self, a: Admission) -> tuple[int, int, int | None]:
        lim = a.limits
        keys = _keys("", a.prefix, a.minute, a.budget_window)
        rpm_key, tpm_key, par_key, budget_key = keys
        now = a.now_ms
        self._purge(now)
        used = self._budget_used(a, budget_key) if lim.budget_tokens else None
        if lim.budget_tokens and used is None:
            return NEED_SEED, 0, None
        refused = self._refusal(a, keys, used)
        if refused is not None:
            return refused[0], refused[1], used
        if lim.rpm:
            self._values[rpm_key] = ((self._get(rpm_key, now) or 0) + 1, now + a.minute_left_ms + 1000)
        if lim.max_parallel:
            self._slots[par_key][a.rid] = now + a.slot_ttl_ms
        if a.reserve > 0 and lim.tpm:
            self._values[tpm_key] = ((self._get(tpm_key, now) or 0) + a.reserve, now + TPM_TTL_MS)
        if a.reserve > 0 and used is not None:
            used += a.reserve
            self._values[budget_key] = (used, self._values[budget_key][1])
        return 0, 0, used

    async def settle(self, ticket: Ticket, tokens: int) -> None:
        now_ms = int(self._clock() * 1000)
        _, tpm_key, par_key, budget_key = _keys("", ticket.prefix, ticket.minute, ticket.budget_window)
        if ticket.parallel:
            self._slots.get(par_key, {}).pop(ticket.rid, None)
        delta = tokens - ticket.reserved
        if delta == 0:
            return
        if ticket.tpm and self._get(tpm_key, now_ms) is None and delta > 0:
            self._values[tpm_key] = (0, now_ms + TPM_TTL_MS)
        for key, wanted in ((tpm_key, ticket.tpm), (budget_key, ticket.budget_window is not None)):
            if wanted and self._get(key, now_ms) is not None:
                value, expires = self._values[key]
                self._values[key] = (value + delta, expires)


class Limiter:
    def __init__(self, shared: Store | None, *, seed: Seed, slot_ttl_s: float = 630.0, retry_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.local = LocalCounters(clock)
        self._seed = seed
        self.slot_ttl_ms = int(slot_ttl_s * 1000)
        self.retry_s = retry_s
        self._clock = clock
        self._shared_down_until = 0.0
        self.shared_up: bool | None = None
        self._spent: OrderedDict[tuple[str, int], int] = OrderedDict()  # (prefix, window) -> last budget used
        self._settled: OrderedDict[str, None] = OrderedDict()

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

    def _remember(self, prefix: str, window: int | None, used: int | None) -> None:
        if window is None or used is None:
            return
        self._spent[(prefix, window)] = used
        self._spent.move_to_end((prefix, window))
        while len(self._spent) > SETTLED_MEMORY:
            self._spent.popitem(last=False)

    async def admit(self, record: KeyRecord, rid: str, now: datetime, reserve: int = 0) -> Decision:
        lim = record.limits
        window, left_ms, start = None, 0, now
        if lim.budget_tokens and lim.budget_period_s:
            window, end = record.period_window(now)
            left_ms = int((end - now).total_seconds() * 1000)
            start = end - timedelta(seconds=lim.budget_period_s)
        a = Admission(record.prefix, lim, rid, int(now.timestamp() * 1000), self.slot_ttl_ms, window, left_ms, -1,
                      max(reserve, 0))
        code, retry_ms, used, store = await self._run(a)
        if code == NEED_SEED:
            try:
                seed = await self._seed(record.prefix, start)
            except Exception as exc:  # no ledger: the last spend seen here, else refuse (fail closed)
                known = self._spent.get((record.prefix, window or 0))
                if known is None:
                    log.warning("cannot read the budget used by key %s from the ledger (%s): refused",
                                record.prefix, exc)
                    return Decision(False, "budget_unavailable", "token budget", 5, status=503)
                log.warning("cannot read the budget used by key %s from the ledger (%s): counting from the last "
                            "spend seen here (%d tokens)", record.prefix, exc, known)
                seed = known
            a = replace(a, seed=seed)
            code, retry_ms, used, store = await self._run(a)
        self._remember(record.prefix, window, used)
        if code != 0:
            return Decision(False, REASONS.get(code, "rate_limited"), LIMITS.get(code, "rate"),
                            max(1, math.ceil(retry_ms / 1000)))
        ticket = Ticket(record.prefix, rid, store.name, bool(lim.max_parallel), bool(lim.tpm), window, a.minute,
                        a.reserve)
        return Decision(True, ticket=ticket)

    async def _run(self, a: Admission) -> tuple[int, int, int | None, Store]:
        store = self._store()
        if store is self.shared:
            try:
                code, retry_ms, used = await store.admit(a)
                if self.shared_up is False:
                    log.warning("Redis is back: rate limits are shared again")
                self.shared_up = True
                return code, retry_ms, used, store
            except (RedisError, OSError) as exc:
                self._shared_failed(exc)
                store = self.local
        code, retry_ms, used = await store.admit(a)
        return code, retry_ms, used, store

    async def settle(self, ticket: Ticket, tokens: int) -> bool:
        """Replace the ticket's reservation by the tokens used; once per request (False: already settled)."""
        if ticket.rid in self._settled:
            return False
        self._settled[ticket.rid] = None
        while len(self._settled) > SETTLED_MEMORY:
            self._settled.popitem(last=False)
        if ticket.store == "local" or self.shared is None:
            await self.local.settle(ticket, tokens)
            return True
        try:
            await self.shared.settle(ticket, tokens)
        except (RedisError, OSError) as exc:
            self._shared_failed(exc)
        return True
