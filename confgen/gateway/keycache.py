"""Key records cached in memory for `ttl_s` seconds, so PostgreSQL is not on every request's path.

A record older than the TTL is read again (one query per key at a time, however many requests wait), so
a revocation reaches every gateway instance within about `ttl_s`. When the database does not answer,
the last known record is used (and the database is not asked again for `retry_s`), but for at most
`stale_max_s` after the database last confirmed it, so a key revoked just before an outage stops working
by then at the latest. A key never seen, or seen too long ago, raises KeysUnavailable (the gateway answers 503).

Records read from the database are also kept in a snapshot file (hashes only, mode 0600), so a gateway
started while the database is down still serves the keys it served before. The file holds no time of its
own (it is written only when a record changes), so its records count as confirmed when this process loads
them: such a gateway serves them for `stale_max_s` after its start, and reads each again as soon as the
database answers.

Each read runs as a task of its own, shared by the requests that wait for it and bounded by `timeout_s`:
a request cancelled while it waits (its client went away) cancels only its own wait.
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
    fetched_at: float  # -inf: from the snapshot, not read by this process yet (so read at the first request)
    usable_until: float  # while the database is down, served until then (confirmed + stale_max_s)


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
                 stale_max_s: float = 900.0, snapshot: Snapshot | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.stale_max_s = stale_max_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._snapshot = snapshot
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._down_until = float("-inf")
        self._saved: dict[str, KeyRecord] = snapshot.load() if snapshot else {}
        loaded_at = clock()
        for prefix, record in self._saved.items():
            self._entries[prefix] = _Entry(record, float("-inf"), loaded_at + stale_max_s)
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
        if pending is None or pending.cancelled():  # cancelled before it ran: only by its event loop's end
            # The read is a task of its own, not part of this request: a request cancelled while it waits
            # (its client went away) leaves the read running for the others, and the next request finds
            # its answer (or joins it).
            pending = asyncio.ensure_future(self._read(prefix))
            pending.add_done_callback(_retrieved)
            self._inflight[prefix] = pending
        try:
            return await asyncio.shield(pending)
        except KeysUnavailable:
            return self._stale(entry)

    async def _read(self, prefix: str) -> KeyRecord | None:
        """Ask the database once for everyone waiting on `prefix`; ends within `timeout_s`."""
        try:
            record = await asyncio.wait_for(self._fetch(prefix), self.timeout_s)
        except Exception as exc:  # any failure to read means "database unavailable"
            self._failed(exc)
            raise KeysUnavailable() from exc
        finally:
            self._inflight.pop(prefix, None)  # done, however it ended: the next miss reads again
        self._stored(prefix, record)
        return record

    def _stale(self, entry: _Entry | None) -> KeyRecord | None:
        if entry is None or entry.record is None or self._clock() >= entry.usable_until:
            raise KeysUnavailable()
        return entry.record

    def _failed(self, exc: BaseException) -> None:
        if self.db_up is not False:
            log.warning("key database unavailable (%s: %s): serving cached keys for at most %.0f s after the "
                        "database last confirmed them; other keys get 503", type(exc).__name__, exc,
                        self.stale_max_s)
        self.mark_down()

    def _stored(self, prefix: str, record: KeyRecord | None) -> None:
        if self.db_up is False:
            log.warning("key database is back")
        self.db_up = True
        now = self._clock()
        self._entries[prefix] = _Entry(record, now, now + self.stale_max_s)
        if self._snapshot is None or record is None or self._saved.get(prefix) == record:
            return
        self._saved[prefix] = record
        self._snapshot.save(self._saved)


def _retrieved(read: asyncio.Future[KeyRecord | None]) -> None:
    """A read nobody waits for any more (every request cancelled) must not log "exception never retrieved"."""
    if not read.cancelled():
        read.exception()
