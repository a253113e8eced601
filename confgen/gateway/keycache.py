"""Key records cached in memory for `ttl_s` seconds, so PostgreSQL is not on every request's path.

A record older than the TTL is read again (one query per key at a time, however many requests wait), so
a revocation reaches every gateway instance within about `ttl_s`. When the database does not answer,
the last known record is used (and the database is not asked again for `retry_s`); a key never seen
raises KeysUnavailable (the gateway answers 503). Records read from the database are also kept in a
snapshot file (hashes only, mode 0600), so a gateway started while the database is down still serves
the keys it served before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.gateway import metrics
from confgen.keys.record import KeyRecord

log = logging.getLogger("confgen.gateway")
Fetch = Callable[[str], Awaitable[KeyRecord | None]]


class KeysUnavailable(Exception):
    """The database is unreachable and this key is not cached."""


@dataclass
class _Entry:
    record: KeyRecord | None  # None: the database said there is no such key
    fetched_at: float


class Snapshot:
    """{prefix: record} in a JSON file; written when a record read from the database changes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {p: KeyRecord.from_json(r) for p, r in data.get("keys", {}).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("key snapshot %s unreadable (%s): starting without it", self.path, exc)
            return {}

    def save(self, records: dict[str, KeyRecord]) -> None:
        text = json.dumps({"keys": {p: r.to_json() for p, r in sorted(records.items())}}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, text + "\n", mode=0o600)
        except OSError as exc:
            log.warning("cannot write the key snapshot %s: %s", self.path, exc)


class KeyCache:
    def __init__(self, fetch: Fetch, *, ttl_s: float = 5.0, retry_s: float = 2.0, timeout_s: float = 2.0,
                 snapshot: Snapshot | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._snapshot = snapshot
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._down_until = float("-inf")
        self._saved: dict[str, KeyRecord] = snapshot.load() if snapshot else {}
        for prefix, record in self._saved.items():
            self._entries[prefix] = _Entry(record, float("-inf"))  # known, but stale until read again
        self.db_up: bool | None = None

    @property
    def snapshot_size(self) -> int:
        return len(self._saved)

    def mark_down(self) -> None:
        self._down_until = self._clock() + self.retry_s
        self.db_up = False

    async def get(self, prefix: str) -> KeyRecord | None:
        """The record, None for a key that does not exist; KeysUnavailable when that cannot be known."""
        entry = self._entries.get(prefix)
        now = self._clock()
        if entry is not None and now - entry.fetched_at < self.ttl_s:
            metrics.record_auth_cache(hit=True)
            return entry.record
        metrics.record_auth_cache(hit=False)
        if now < self._down_until:
            return self._stale(entry)
        pending = self._inflight.get(prefix)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[prefix] = pending
            try:
                record = await asyncio.wait_for(self._fetch(prefix), self.timeout_s)
            except Exception as exc:  # any failure to read means "database unavailable"
                self._failed(exc)
                pending.set_exception(KeysUnavailable())
                pending.exception()  # retrieved: waiters, if any, get their own copy below
                del self._inflight[prefix]
                return self._stale(entry)
            del self._inflight[prefix]
            self._stored(prefix, record)
            pending.set_result(record)
            return record
        try:
            return await asyncio.shield(pending)
        except KeysUnavailable:
            return self._stale(entry)

    def _stale(self, entry: _Entry | None) -> KeyRecord | None:
        if entry is None or entry.record is None:
            raise KeysUnavailable()
        return entry.record

    def _failed(self, exc: BaseException) -> None:
        if self.db_up is not False:
            log.warning("key database unavailable (%s: %s): serving cached keys; unknown keys get 503",
                        type(exc).__name__, exc)
        self.mark_down()

    def _stored(self, prefix: str, record: KeyRecord | None) -> None:
        if self.db_up is False:
            log.warning("key database is back")
        self.db_up = True
        self._entries[prefix] = _Entry(record, self._clock())
        if self._snapshot is None or record is None or self._saved.get(prefix) == record:
            return
        self._saved[prefix] = record
        self._snapshot.save(self._saved)

