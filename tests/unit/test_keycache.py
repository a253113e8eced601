"""confgen.gateway.keycache: TTL, one read per key however many wait, stale records while the database is
down (for at most stale_max_s), 503 for keys never seen, the snapshot that serves known keys after a
restart, and cancelled lookups that wedge nothing. Real asyncio; time is a fake clock where it matters."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from confgen.gateway.keycache import KeyCache, KeysUnavailable, Snapshot
from confgen.keys.record import KeyRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def record(prefix: str = "abcdefghijkl", revoked: bool = False) -> KeyRecord:
    return KeyRecord(prefix=prefix, key_hash="0" * 64, alias=f"alias-{prefix}", created_at=T0,
                     revoked_at=T0 if revoked else None)


class Database:
    def __init__(self) -> None:
        self.rows: dict[str, KeyRecord] = {}
        self.up = True
        self.reads = 0
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # when set: each read waits for it

    async def fetch(self, prefix: str) -> KeyRecord | None:
        self.reads += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if not self.up:
            raise ConnectionError("connection refused")
        return self.rows.get(prefix)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(db: Database, clock: Clock, snapshot: Snapshot | None = None, stale_max_s: float = 900) -> KeyCache:
    return KeyCache(db.fetch, ttl_s=5, retry_s=2, timeout_s=1, stale_max_s=stale_max_s, snapshot=snapshot,
                    clock=clock)


async def bounded(awaitable: Awaitable[T], seconds: float = 2.0) -> T:
    """A test that would hang fails instead."""
    return await asyncio.wait_for(awaitable, seconds)


def test_records_are_read_again_after_the_ttl() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock)

    async def run() -> None:
        assert await keys.get("abcdefghijkl") == record()
        assert await keys.get("abcdefghijkl") == record()
        assert db.reads == 1
        db.rows["abcdefghijkl"] = record(revoked=True)
        clock.now += 4.9
        assert (await keys.get("abcdefghijkl")).revoked_at is None  # type: ignore[union-attr]
        clock.now += 0.2
        assert (await keys.get("abcdefghijkl")).revoked_at == T0  # type: ignore[union-attr]
        assert db.reads == 2
        assert await keys.get("zzzzzzzzzzzz") is None  # unknown: remembered for the TTL too
        assert await keys.get("zzzzzzzzzzzz") is None
        assert db.reads == 3

    asyncio.run(run())


def test_many_waiters_one_read() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    db.delay = 0.05
    keys = cache(db, clock)

    async def run() -> list[KeyRecord | None]:
        return list(await asyncio.gather(*(keys.get("abcdefghijkl") for _ in range(50))))

    assert asyncio.run(run()) == [record()] * 50
    assert db.reads == 1


def test_database_down_stale_records_served_unknown_keys_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock)

    async def run() -> None:
        await keys.get("abcdefghijkl")
        db.up = False
        clock.now += 10
        assert await keys.get("abcdefghijkl") == record()  # stale, still served
        with pytest.raises(KeysUnavailable):
            await keys.get("bbbbbbbbbbbb")
        reads = db.reads
        assert await keys.get("abcdefghijkl") == record()
        assert db.reads == reads  # not asked again within retry_s
        db.up = True
        clock.now += 2.1
        assert await keys.get("bbbbbbbbbbbb") is None
        assert keys.db_up is True

    asyncio.run(run())
    assert caplog.text.count("key database unavailable") == 1
    assert "key database is back" in caplog.text


def test_waiters_share_a_failed_read() -> None:
    db, clock = Database(), Clock()
    db.up, db.delay = False, 0.05
    keys = cache(db, clock)

    async def run() -> list[object]:
        return list(await asyncio.gather(*(keys.get("abcdefghijkl") for _ in range(5)), return_exceptions=True))

    assert all(isinstance(r, KeysUnavailable) for r in asyncio.run(run()))
    assert db.reads == 1


def test_snapshot_serves_known_keys_after_a_restart_while_the_database_is_down(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys-snapshot.json"
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    first = cache(db, clock, Snapshot(path))
    asyncio.run(first.get("abcdefghijkl"))
    asyncio.run(first.get("zzzzzzzzzzzz"))  # unknown keys are not written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "key_hash" in path.read_text()
    assert "zzzzzzzzzzzz" not in path.read_text()

    db.up = False
    restarted = cache(db, clock, Snapshot(path))
    assert restarted.snapshot_size == 1
    assert asyncio.run(restarted.get("abcdefghijkl")) == record()
    with pytest.raises(KeysUnavailable):
        asyncio.run(restarted.get("zzzzzzzzzzzz"))


def test_unreadable_snapshot_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "snap.json"
    path.write_text("{not json")
    assert Snapshot(path).load() == {}
    assert "unreadable" in caplog.text


def test_a_cancelled_first_lookup_does_not_wedge_the_key() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock)

    async def run() -> None:
        db.gate = asyncio.Event()
        first = asyncio.create_task(keys.get("abcdefghijkl"))
        await asyncio.sleep(0.01)  # the read has started and waits on the database
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        db.gate.set()
        assert await bounded(keys.get("abcdefghijkl")) == record()
        assert db.reads == 1  # the read went on for the next request
        clock.now += 6
        db.gate = None
        assert await bounded(keys.get("abcdefghijkl")) == record()
        assert db.reads == 2

    asyncio.run(run())


def test_waiters_of_a_cancelled_lookup_get_the_answer() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock)

    async def run() -> list[KeyRecord | None]:
        db.gate = asyncio.Event()
        first = asyncio.create_task(keys.get("abcdefghijkl"))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(keys.get("abcdefghijkl")) for _ in range(5)]
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        db.gate.set()
        return list(await bounded(asyncio.gather(*waiters)))

    assert asyncio.run(run()) == [record()] * 5
    assert db.reads == 1


def test_a_lookup_cancelled_while_the_database_hangs_ends_in_unavailable_not_a_hang() -> None:
    db, clock = Database(), Clock()
    db.gate = asyncio.Event()  # never set: the database never answers
    keys = KeyCache(db.fetch, ttl_s=5, retry_s=2, timeout_s=0.1, clock=clock)

    async def run() -> list[object]:
        first = asyncio.create_task(keys.get("abcdefghijkl"))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(keys.get("abcdefghijkl")) for _ in range(3)]
        await asyncio.sleep(0.01)
        first.cancel()
        return list(await bounded(asyncio.gather(*waiters, return_exceptions=True)))

    assert all(isinstance(r, KeysUnavailable) for r in asyncio.run(run()))
    assert keys.db_up is False
    assert db.reads == 1


def test_every_cancelled_lookup_leaves_no_unretrieved_exception(caplog: pytest.LogCaptureFixture) -> None:
    db, clock = Database(), Clock()
    db.up, db.delay = False, 0.02
    keys = cache(db, clock)

    async def run() -> None:
        first = asyncio.create_task(keys.get("abcdefghijkl"))
        await asyncio.sleep(0.005)
        first.cancel()
        await asyncio.sleep(0.05)  # the read fails with nobody waiting

    asyncio.run(run())
    assert "never retrieved" not in caplog.text
    assert keys.db_up is False


def test_a_cached_key_is_served_at_most_stale_max_while_the_database_is_down() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock, stale_max_s=60)

    async def run() -> None:
        await keys.get("abcdefghijkl")  # confirmed at 100
        db.up = False
        clock.now += 59.9
        assert await keys.get("abcdefghijkl") == record()
        clock.now += 0.2  # 60.1 s after the database last confirmed it
        with pytest.raises(KeysUnavailable):
            await keys.get("abcdefghijkl")
        clock.now += 2.1  # retry_s later the database is asked again, and refuses still
        with pytest.raises(KeysUnavailable):
            await keys.get("abcdefghijkl")
        db.up = True
        db.rows["abcdefghijkl"] = record(revoked=True)
        clock.now += 2.1
        assert (await keys.get("abcdefghijkl")).revoked_at == T0  # type: ignore[union-attr]

    asyncio.run(run())


def test_stale_max_zero_serves_nothing_stale() -> None:
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock, stale_max_s=0)

    async def run() -> None:
        assert await keys.get("abcdefghijkl") == record()  # within the TTL: served from memory
        db.up = False
        clock.now += 5
        with pytest.raises(KeysUnavailable):
            await keys.get("abcdefghijkl")

    asyncio.run(run())


def test_snapshot_keys_are_served_for_stale_max_after_the_start(tmp_path: Path) -> None:
    path = tmp_path / "keys-snapshot.json"
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    asyncio.run(cache(db, clock, Snapshot(path)).get("abcdefghijkl"))

    db.up = False
    clock.now += 86400  # the snapshot is a day old: its age does not count, the restart's time does
    restarted = cache(db, clock, Snapshot(path), stale_max_s=60)
    restarted.mark_down()  # as Gateway.start does when PostgreSQL does not answer
    assert asyncio.run(restarted.get("abcdefghijkl")) == record()
    assert db.reads == 1  # down: not asked
    clock.now += 60
    with pytest.raises(KeysUnavailable):
        asyncio.run(restarted.get("abcdefghijkl"))


def test_snapshot_keys_are_read_again_once_the_database_answers(tmp_path: Path) -> None:
    path = tmp_path / "keys-snapshot.json"
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    asyncio.run(cache(db, clock, Snapshot(path)).get("abcdefghijkl"))
    db.rows["abcdefghijkl"] = record(revoked=True)
    restarted = cache(db, clock, Snapshot(path))
    assert asyncio.run(restarted.get("abcdefghijkl")).revoked_at == T0  # type: ignore[union-attr]
    assert db.reads == 2


def test_a_read_left_when_the_event_loop_ends_is_not_inherited() -> None:
    """asyncio.run cancels the tasks left when it ends (a read among them); the next loop reads afresh."""
    db, clock = Database(), Clock()
    db.rows["abcdefghijkl"] = record()
    keys = cache(db, clock)

    async def leave_a_read_behind() -> None:
        db.gate = asyncio.Event()  # the read waits on the database when the loop ends
        asyncio.create_task(keys.get("abcdefghijkl"))  # noqa: RUF006 - left for asyncio.run to cancel
        await asyncio.sleep(0.01)

    asyncio.run(leave_a_read_behind())
    db.gate = None
    assert asyncio.run(bounded(keys.get("abcdefghijkl"))) == record()
    assert db.reads == 2
