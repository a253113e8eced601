"""confgen.ledger.spool: durable append, replay oldest first and in order, nothing lost on a failed replay,
files of a live process left alone, a line cut by a crash set aside, and a folder others could write in
refused at start."""

from __future__ import annotations

import fcntl
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from confgen.errors import ConfgenError
from confgen.ledger.row import UsageRow
from confgen.ledger.spool import Spool

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(start: int, count: int) -> list[UsageRow]:
    return [UsageRow(request_id=f"r{i:05d}", ts=T0 + timedelta(seconds=i), status=200, key_alias="a",
                     prompt_tokens=i, completion_tokens=1) for i in range(start, start + count)]


class Sink:
    def __init__(self, fail_after: int | None = None) -> None:
        self.got: list[UsageRow] = []
        self.fail_after = fail_after

    def __call__(self, batch: list[UsageRow]) -> int:
        if self.fail_after is not None and len(self.got) + len(batch) > self.fail_after:
            raise ConnectionError("database went away")
        self.got.extend(batch)
        return len(batch)


def test_row_json_round_trip() -> None:
    row = UsageRow(request_id="x", ts=T0, status=429, call_id="c", key_prefix="p", key_alias="a", model="m",
                   deployment="http://b/v1", route="/v1/chat/completions", prompt_tokens=3, completion_tokens=4,
                   latency_ms=1.5, ttft_ms=0.5, error_class="KeyRejected", reason="rate_limited", stream=True,
                   instance="h:1")
    assert UsageRow.from_json(json.loads(json.dumps(row.to_json()))) == row


def test_append_then_replay_in_order_and_files_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert not spool.pending()
    spool.append(rows(0, 3))
    spool.append(rows(3, 2500))
    assert spool.pending()
    assert spool.own_rows == 2503
    sink = Sink()
    assert spool.replay(sink) == 2503
    assert [r.request_id for r in sink.got] == [f"r{i:05d}" for i in range(2503)]
    assert sink.got[7] == rows(7, 1)[0]
    assert list((tmp_path / "spool").iterdir()) == []
    assert not spool.pending(recheck_s=0)
    assert spool.own_rows == 0


def test_failed_replay_keeps_everything_and_a_retry_sends_it_all(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rows(0, 1500))
    with pytest.raises(ConnectionError):
        spool.replay(Sink(fail_after=1200))
    spool.append(rows(1500, 10))  # appended after the failed replay: still after the older rows
    sink = Sink()
    spool.replay(sink)
    assert [r.request_id for r in sink.got] == [f"r{i:05d}" for i in range(1510)]


def test_files_of_other_processes_oldest_first_locked_ones_skipped(tmp_path: Path) -> None:
    first, second, live = Spool(tmp_path), Spool(tmp_path), Spool(tmp_path)
    first.append(rows(0, 2))
    second.append(rows(2, 2))
    live.append(rows(4, 2))
    first.close()  # a process that ended: its file is unlocked
    second.close()
    replayer = Spool(tmp_path)
    assert replayer.pending()
    sink = Sink()
    assert replayer.replay(sink) == 4
    assert [r.request_id for r in sink.got] == ["r00000", "r00001", "r00002", "r00003"]
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # the live process's file stays
    sink2 = Sink()
    live.replay(sink2)
    assert [r.request_id for r in sink2.got] == ["r00004", "r00005"]


def test_file_locked_elsewhere_is_not_replayed(tmp_path: Path) -> None:
    owner = Spool(tmp_path)
    owner.append(rows(0, 1))
    owner.close()
    path = next(tmp_path.glob("*.jsonl"))
    with open(path, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert Spool(tmp_path).replay(Sink()) == 0
    assert Spool(tmp_path).replay(Sink()) == 1


def test_a_line_cut_by_a_crash_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rows(0, 2))
    spool.close()
    path = next(tmp_path.glob("*.jsonl"))
    with open(path, "ab") as out:
        out.write(b'{"request_id": "r9", "ts": "2026')
    sink = Sink()
    assert Spool(tmp_path).replay(sink) == 2
    assert path.with_suffix(".bad").read_bytes() == b'{"request_id": "r9", "ts": "2026\n'


def test_a_missing_folder_is_created_private_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "spool"
    Spool(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777, 0o720])
def test_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(ConfgenError) as err:
        Spool(folder)
    assert str(err.value) == (f"{folder}: the usage spool has mode {mode:04o}: others can write in it "
                              f"(chmod 700 {folder})")


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755])
def test_a_folder_only_we_can_write_is_accepted(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    folder.chmod(mode)
    Spool(folder).append(rows(0, 1))
    assert len(list(folder.glob("*.jsonl"))) == 1


def test_a_folder_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    owner = folder.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as if another user had created it first
    with pytest.raises(ConfgenError) as err:
        Spool(folder)
    assert str(err.value) == (f"{folder}: the usage spool is owned by uid {owner}, not by this gateway's uid "
                              f"{owner + 1} (remove it, or set CONFGEN_LEDGER_SPOOL to a folder of the gateway's "
                              "user with mode 0700)")


def test_a_symlink_to_someone_elses_folder_is_judged_by_its_target(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o777)
    (tmp_path / "spool").symlink_to(target)
    with pytest.raises(ConfgenError, match="others can write in it"):
        Spool(tmp_path / "spool")


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("")
    with pytest.raises(ConfgenError) as err:
        Spool(tmp_path / "spool")
    assert str(err.value) == (f"{tmp_path / 'spool'}: the usage spool's path is taken by something that is not a "
                              "folder (remove it, or set CONFGEN_LEDGER_SPOOL to a folder of the gateway's user with "
                              "mode 0700)")
