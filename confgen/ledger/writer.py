"""The background ledger writer: a thread that batches rows into PostgreSQL, off the request path.

Rows are queued by the gateway (`put`, cheap and thread-safe). The thread takes up to `batch_max` rows
every `interval_s` and inserts them in one statement (`unnest` of column arrays; a request id already there
is kept unless the new row is the request's answer, see INSERT). When PostgreSQL is down or slower than
`statement_timeout_s`, batches go to the spool, and
while the spool holds rows every batch goes there too, so replay keeps the order; the spool is replayed
as soon as a connection works again. `close` (at exit) inserts what is queued or spools it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import psycopg

from confgen.gateway import metrics
from confgen.keys.db import first_line, redact
from confgen.ledger.row import COLUMNS, SQL_TYPES, UsageRow
from confgen.ledger.spool import Spool

log = logging.getLogger("confgen.ledger")

_ARRAYS = ", ".join(f"%s::{SQL_TYPES.get(c, 'text')}[]" for c in COLUMNS)
_UPDATED = [c for c in COLUMNS if c != "request_id"]
# One request can end in several events under its id: LiteLLM logs every failed attempt (retried on another
# replica, or handed to a fallback model) and then the answer, in any order. Its row is the answer when there
# is one: an answered row replaces a failed one, never the other way round (so a replay changes nothing).
INSERT = (f"INSERT INTO confgen_usage ({', '.join(COLUMNS)}) SELECT * FROM unnest({_ARRAYS}) "  # noqa: S608
          f"ON CONFLICT (request_id) DO UPDATE SET ({', '.join(_UPDATED)}) = "
          f"({', '.join('EXCLUDED.' + c for c in _UPDATED)}) "
          "WHERE confgen_usage.status <> 200 AND EXCLUDED.status = 200")


def one_per_request(rows: list[UsageRow]) -> list[UsageRow]:
    """A row per request id (the answered one if any), in first-seen order: one statement may not touch a row
    twice."""
    kept: dict[str, UsageRow] = {}
    for row in rows:
        if row.request_id not in kept or (kept[row.request_id].status != 200 and row.status == 200):
            kept[row.request_id] = row
    return list(kept.values())


def insert_rows(conn: psycopg.Connection, rows: list[UsageRow]) -> int:
    """One statement for the batch; returns the rows new to the table or answered now (duplicates are skipped)."""
    columns = [[getattr(r, c) for r in one_per_request(rows)] for c in COLUMNS]
    with conn.transaction():
        cur = conn.execute(INSERT.encode(), columns)
        return max(cur.rowcount, 0)


class LedgerWriter:
    def __init__(self, url: str, spool: Spool, *, batch_max: int = 1000, interval_s: float = 0.2,
                 retry_s: float = 2.0, statement_timeout_s: float = 5.0, connect_timeout_s: float = 2.0,
                 connect: Callable[[], psycopg.Connection] | None = None) -> None:
        self.url = url
        self.spool = spool
        self.batch_max = batch_max
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._connect = connect or self._default_connect
        self._queue: queue.SimpleQueue[UsageRow] = queue.SimpleQueue()
        self._conn: psycopg.Connection | None = None
        self._down_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: list[UsageRow] = []
        self._closed = False
        self.inserted = 0
        self.duplicates = 0
        self.db_up: bool | None = None

    # -- the request side -------------------------------------------------------------------------
    def put(self, row: UsageRow) -> None:
        if self._closed:
            self._spool([row])  # a late event after close: still durable
            return
        self._queue.put(row)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="confgen-ledger", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop the thread, then insert (or spool) everything still queued. Safe to call twice."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                # Stuck on a hung database: spool its batch too; if the insert lands after all,
                # replay skips the duplicates (request_id).
                self._spool(list(self._current))
                self._conn = None
        self._closed = True
        rest = self._drain()
        if rest:
            if self._thread is not None and self._thread.is_alive():
                self._spool(rest)
            else:
                self._cycle(rest)
        self.spool.close()
        if self._conn is not None:
            self._conn.close()

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            try:
                self._cycle(batch)
            except Exception:  # the writer must outlive any surprise; rows go to the spool
                log.exception("usage ledger writer: unexpected error; spooling the batch")
                try:
                    self._spool(batch)
                except OSError:
                    log.exception("usage ledger: cannot write the spool in %s: %d rows lost", self.spool.folder,
                                  len(batch))
            finally:
                self._current = []

    def _take(self) -> list[UsageRow]:
        batch: list[UsageRow] = []
        try:
            batch.append(self._queue.get(timeout=self.interval_s))
        except queue.Empty:
            return batch
        self._fill(batch)
        if len(batch) < self.batch_max:
            # Rows arrive one by one: wait out the interval so one INSERT carries them all, not one INSERT each
            # (at 100 rows/s: 0.41 -> 0.05 ms of CPU per row, docs/benchmarks.md "Gateway tuning"). A backlog
            # (a full batch) goes at once; close() cuts the wait short.
            self._stop.wait(self.interval_s)
            self._fill(batch)
        self._current = batch
        return batch

    def _fill(self, batch: list[UsageRow]) -> None:
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _drain(self) -> list[UsageRow]:
        rows = []
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                return rows

    def _cycle(self, batch: list[UsageRow]) -> None:
        if batch:
            if self.spool.pending() or not self._ready():
                self._spool(batch)
            else:
                try:
                    self._insert(batch)
                except psycopg.Error as exc:
                    self._down(exc)
                    self._spool(batch)
        if self.spool.pending() and self._ready():
            try:
                replayed = self.spool.replay(self._replay_insert)
            except psycopg.Error as exc:
                self._down(exc)
            else:
                metrics.record_ledger(replayed=replayed)
                metrics.set_spool_size(self.spool.own_rows)

    def _spool(self, rows: list[UsageRow]) -> None:
        self.spool.append(rows)
        metrics.record_ledger(spooled=len(rows))
        metrics.set_spool_size(self.spool.own_rows)

    def _insert(self, rows: list[UsageRow]) -> int:
        added = self._replay_insert(rows)
        metrics.record_ledger(written=added)
        return added

    def _replay_insert(self, rows: list[UsageRow]) -> int:
        if self._conn is None:
            raise psycopg.OperationalError("not connected")
        added = insert_rows(self._conn, rows)
        self.inserted += added
        self.duplicates += len(rows) - added
        return added

    def _ready(self) -> bool:
        if self._conn is not None and not self._conn.closed:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            self._down(exc)
            return False
        if self.db_up is False:
            log.warning("usage ledger: PostgreSQL at %s is back; replaying the spool", redact(self.url))
        self.db_up = True
        return True

    def _down(self, exc: psycopg.Error) -> None:
        if self.db_up is not False:
            log.warning("usage ledger: PostgreSQL at %s unavailable (%s): rows go to the spool in %s until it is "
                        "back", redact(self.url), first_line(exc), self.spool.folder)
        self.db_up = False
        self._down_until = time.monotonic() + self.retry_s
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _default_connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout,
                               options=f"-c statement_timeout={self._statement_timeout_ms}")
