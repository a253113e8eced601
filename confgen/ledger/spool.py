"""A local append-only spool of ledger rows (JSON lines, fsync'd) for when PostgreSQL is down or slow.

Each process appends to its own file, created already locked (flock) so no other process replays it while
it is written. Replay takes files oldest first (names start with a nanosecond timestamp), inserts their
rows in order in batches and deletes a file only when all of it is in; a file left by a dead process is
unlocked and replayed by the next writer that finds it. Inserts are idempotent on request_id, so a replay
cut short and done again counts nothing twice.

The folder is checked when the spool is made (the gateway's start): it must be a folder of this user that
no one else can write, since anyone who can write there can add usage rows or replace the files. A
missing folder is created with mode 0700.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from confgen.errors import ConfgenError
from confgen.ledger.row import UsageRow

log = logging.getLogger("confgen.ledger")
Insert = Callable[[list[UsageRow]], int]
REPLAY_BATCH = 1000


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        _private_folder(folder)
        self._lock = threading.Lock()
        self._own: IO[bytes] | None = None
        self._own_path: Path | None = None
        self.spooled = 0
        self.replayed = 0
        self.own_rows = 0  # rows in this process's file, not replayed yet
        self._others_checked = 0.0

    def append(self, rows: list[UsageRow]) -> None:
        """Write rows durably (fsync) before returning."""
        if not rows:
            return
        data = b"".join(json.dumps(r.to_json(), separators=(",", ":")).encode() + b"\n" for r in rows)
        with self._lock:
            handle = self._own or self._open_own()
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            self.spooled += len(rows)
            self.own_rows += len(rows)

    def _open_own(self) -> IO[bytes]:
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}"
        tmp = self.folder / f".{name}.tmp"
        # O_APPEND: writes go to the end even after a replay read the file from the start.
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "a+b")  # kept open (and locked) while this process spools
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        final = self.folder / f"{name}.jsonl"
        tmp.rename(final)  # visible to others only once locked
        _fsync_dir(self.folder)
        self._own, self._own_path = handle, final
        return handle

    def pending(self, recheck_s: float = 5.0) -> bool:
        """Rows of ours to replay, or (checked every recheck_s) files other processes left."""
        if self._own is not None:
            return True
        now = time.monotonic()
        if now - self._others_checked < recheck_s:
            return False
        self._others_checked = now
        return any(self._files())

    def _files(self) -> list[Path]:
        try:
            return sorted(self.folder.glob("*.jsonl"))
        except OSError:
            return []

    def replay(self, insert: Insert) -> int:
        """Insert every replayable file, oldest first; raises what `insert` raises (the file stays)."""
        total = 0
        with self._lock:
            for path in self._files():
                if path == self._own_path and self._own is not None:
                    total += self._replay_file(path, self._own, insert)
                    self._own.close()
                    self._own, self._own_path = None, None
                    self.own_rows = 0
                    continue
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    continue
                try:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live process owns it and replays it itself
                    if not path.exists():
                        continue  # replayed and deleted by another process meanwhile
                    total += self._replay_file(path, handle, insert)
                finally:
                    handle.close()
            self._others_checked = 0.0
        self.replayed += total
        return total

    def _replay_file(self, path: Path, handle: IO[bytes], insert: Insert) -> int:
        handle.seek(0)
        batch: list[UsageRow] = []
        count = 0
        for row in _rows(handle, path):
            batch.append(row)
            if len(batch) >= REPLAY_BATCH:
                insert(batch)
                count += len(batch)
                batch = []
        if batch:
            insert(batch)
            count += len(batch)
        path.unlink(missing_ok=True)
        _fsync_dir(self.folder)
        log.warning("replayed %d spooled usage rows from %s", count, path)
        return count

    def close(self) -> None:
        with self._lock:
            if self._own is not None:
                self._own.close()
                self._own, self._own_path = None, None


def _private_folder(folder: Path) -> None:
    """Create `folder` (0700) if missing; refuse one that is not a folder of ours closed to others' writes."""
    fix = "remove it, or set CONFGEN_LEDGER_SPOOL to a folder of the gateway's user with mode 0700"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.stat(folder)
    except FileExistsError:
        raise ConfgenError.one(str(folder), "the usage spool's path is taken by something that is not a folder",
                               fix) from None
    except OSError as exc:
        raise ConfgenError.one(str(folder), f"cannot create the usage spool: {exc.strerror or exc}", fix) from None
    if info.st_uid != os.getuid():
        raise ConfgenError.one(str(folder), f"the usage spool is owned by uid {info.st_uid}, not by this gateway's "
                               f"uid {os.getuid()}", fix)
    if info.st_mode & 0o022:
        raise ConfgenError.one(str(folder), f"the usage spool has mode {stat.S_IMODE(info.st_mode):04o}: others can "
                               "write in it", f"chmod 700 {folder}")


def _rows(handle: IO[bytes], path: Path) -> Iterator[UsageRow]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            yield UsageRow.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            # Only a line cut by a crash mid-write can be broken; keep it for a person to look at.
            bad = path.with_suffix(".bad")
            with open(bad, "ab") as out:
                out.write(line if line.endswith(b"\n") else line + b"\n")
            log.error("%s line %d is not a usage row (%s): kept in %s", path, number, exc, bad)  # noqa: TRY400


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
