"""confgen.gateway.keycache: TTL, one read per key however many wait, stale records while the database is
down, 503 for keys never seen, and the snapshot that serves known keys after a restart."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confgen.gateway.keycache import KeyCache, KeysUnavailable, Snapshot
from confgen.keys.record import KeyRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(prefix: str = "abcdefghijkl", revoked: bool = False) -> KeyRecord:
    return KeyRecord(prefix=prefix, key_hash="0" * 64, alias=f"alias-{prefix}", created_at=T0,
                     revoked_at=T0 if revoked else None)


class Database:
    def __init__(self) -> None:
        self.rows: dict[str, KeyRecord] = {}
        self.up = True
        self.reads = 0
        self.delay = 0.0

    async def fetch(self, prefix: str) -> KeyRecord | None:
        self.reads += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.up:
            raise ConnectionError("connection refused")
        return self.rows.get(prefix)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(db: Database, clock: Clock, snapshot: Snapshot | None = None) -> KeyCache:
    return KeyCache(db.fetch, ttl_s=5, retry_s=2, timeout_s=1, snapshot=snapshot, clock=clock)


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
