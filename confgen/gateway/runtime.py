"""The gateway process's shared state: key cache, limiter, ledger writer. Made once per process, when
LiteLLM loads our callback at start-up (so what it finds is logged then), and flushed at exit."""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing.util
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from confgen.errors import ConfgenError
from confgen.gateway import accounting, edge, lane, ondemand
from confgen.gateway.config import ENV, GatewayConfig
from confgen.gateway.keycache import KeyCache, Snapshot
from confgen.gateway.limits import Limiter, RedisCounters
from confgen.keys import migrations, store
from confgen.keys.db import first_line, redact
from confgen.keys.record import KeyRecord
from confgen.ledger.spool import Spool
from confgen.ledger.writer import LedgerWriter

log = logging.getLogger("confgen")
T = TypeVar("T")
SEED_SQL = ("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM confgen_usage "
            "WHERE key_prefix = %s AND ts >= %s")


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("confgen: %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class AsyncDB:
    """One connection for the rare reads on the request side (a key every TTL, a budget seed)."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection | None = None
        self._lock: asyncio.Lock | None = None

    async def run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=max(1, round(self.timeout_s)),
                    options=f"-c statement_timeout={int(self.timeout_s * 1000)}")
            try:
                return await work(self._conn)
            except psycopg.Error:
                conn, self._conn = self._conn, None
                await conn.close()
                raise


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.db = AsyncDB(config.database_url)
        snapshot = Snapshot(config.snapshot) if config.snapshot else None
        self.keys = KeyCache(self._fetch, ttl_s=config.key_ttl_s, stale_max_s=config.key_stale_max_s,
                             snapshot=snapshot)
        shared = RedisCounters(config.redis_url, config.redis_prefix) if config.redis_url else None
        self.limiter = Limiter(shared, seed=self._seed, slot_ttl_s=config.slot_ttl_s)
        self.ledger = LedgerWriter(config.database_url, Spool(config.spool_dir))

    async def _fetch(self, prefix: str) -> KeyRecord | None:
        return await self.db.run(lambda conn: store.lookup_async(conn, prefix))

    async def _seed(self, prefix: str, since: datetime) -> int:
        async def query(conn: psycopg.AsyncConnection) -> int:
            cur = await conn.execute(SEED_SQL, (prefix, since))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self.db.run(query)

    def start(self) -> None:
        """Migrate (idempotent), say what this gateway found, put the edge limits in front of the proxy's app;
        never fails the gateway's start (a bad setting already failed it, in GatewayConfig.from_env)."""
        url = redact(self.config.database_url)
        try:
            with psycopg.connect(self.config.database_url, autocommit=True, connect_timeout=2) as conn:
                applied = migrations.migrate(conn)
            log.info("keys and usage ledger in PostgreSQL at %s%s", url,
                     f" (migrations applied: {', '.join(applied)})" if applied else "")
            self.keys.db_up = True
        except psycopg.Error as exc:
            self.keys.mark_down()
            log.warning("PostgreSQL at %s is unreachable (%s): serving the master key and %d keys from the "
                        "snapshot %s; unknown keys get 503; usage rows are kept in the spool %s and replayed "
                        "when the database is back", url, first_line(exc), self.keys.snapshot_size,
                        self.config.snapshot or "(none)", self.config.spool_dir)
        if not os.environ.get(ENV["spool_dir"]):
            log.warning("%s is not set: usage rows wait in %s while PostgreSQL is down", ENV["spool_dir"],
                        self.config.spool_dir)
        if self.config.redis_url is None:
            log.warning("no Redis configured: rate limits are counted per gateway instance")
        ondemand.install()  # innermost: GET /health shows the on-demand models' states (confgen/gateway/ondemand.py)
        lane.install(self.config.relay_lane)  # inside the edge guard: the edge limits apply first
        # Around the lane and LiteLLM, inside the edge guard: every accepted request one answer and one row.
        accounting.install(put=self.ledger.put, settle=self.limiter.settle, instance=self.instance)
        edge.install(self.config.edge)  # in the proxy: every request passes the edge limits first
        self.ledger.start()

    def close(self) -> None:
        self.ledger.close()


_gateway: Gateway | None = None
_lock = threading.Lock()
_closed = False


def gateway() -> Gateway:
    global _gateway  # noqa: PLW0603 - one per process, made on first use
    if _gateway is None:
        with _lock:
            if _gateway is None:
                _setup_logging()
                try:
                    made = Gateway(GatewayConfig.from_env(os.environ))
                except ConfgenError as exc:  # LiteLLM's start-up then fails with it; the log says why first
                    log.error("the gateway cannot start: %s", exc)  # noqa: TRY400 - a user error, no traceback
                    raise
                made.start()
                _install_exit_hooks()
                _gateway = made
    return _gateway


def _install_exit_hooks() -> None:
    # On SIGTERM uvicorn drains requests, runs the lifespan shutdown, then re-raises the signal with the
    # default handler: the process dies there and atexit never runs. So the flush hangs on uvicorn's
    # Server.shutdown (found through the SIGTERM handler it installed), after the drain. atexit (a plain
    # exit) and multiprocessing's Finalize (a --num_workers > 1 worker) cover the other ways out.
    if not _hook_uvicorn_shutdown():
        log.warning("no uvicorn server found: usage rows are flushed at exit only (not on SIGTERM)")
    atexit.register(shutdown)
    multiprocessing.util.Finalize(None, shutdown, exitpriority=100)


def _hook_uvicorn_shutdown() -> bool:
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    original = getattr(server, "shutdown", None)
    if server is None or not callable(original) or not hasattr(server, "should_exit"):
        return False

    async def shutdown_then_flush(*args: Any, **kwargs: Any) -> None:
        try:
            await original(*args, **kwargs)
        finally:
            await _drain_litellm_logging(timeout_s=3.0)
            await asyncio.to_thread(shutdown)

    server.shutdown = shutdown_then_flush
    return True


async def _drain_litellm_logging(timeout_s: float) -> None:
    """Let LiteLLM's logging worker run the events still queued (they hold our last rows)."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER as worker
    except ImportError:
        return
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        pending = getattr(worker, "_queue", None)
        busy = getattr(worker, "_running_tasks", ())
        if (pending is None or pending.empty()) and not busy:
            return
        await asyncio.sleep(0.05)


def shutdown() -> None:
    """Run LiteLLM's pending logging events (they hold our last rows), then flush the ledger. Once."""
    global _closed  # noqa: PLW0603
    if _closed or _gateway is None:
        return
    _closed = True
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        # Its own atexit hook would run after ours (registered earlier); running it first is safe,
        # the second run finds the queue empty.
        GLOBAL_LOGGING_WORKER._flush_on_exit()
    except Exception:  # flushing our rows matters more
        log.exception("flushing LiteLLM's logging queue at exit failed")
    _gateway.close()
    log.info("usage ledger flushed at exit: %d rows inserted, %d spooled in all", _gateway.ledger.inserted,
             _gateway.ledger.spool.spooled)
