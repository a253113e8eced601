"""`stop` signals only the processes it started: each pid is recorded with its start time (/proc/<pid>/stat
field 22), and a pid whose start time differs (reused, e.g. after a reboot) is named and left alone. Real
child processes, no mocks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from confgen.runtime.rundir import Proc, RunDir, State, ours, start_time
from confgen.runtime.stack import _running, stop_procs


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session, as the stack spawns them (stack._spawn)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_start_time_is_read_from_proc(sleeper: subprocess.Popen[bytes]) -> None:
    child, me = start_time(sleeper.pid), start_time(os.getpid())
    assert child is not None
    assert me is not None
    assert child >= me  # clock ticks after boot: the child started after this process
    assert start_time(2**22 + 12345) is None  # above pid_max: no such process


def test_a_pid_that_started_at_another_time_is_not_signalled(sleeper: subprocess.Popen[bytes],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    recorded = Proc.spawned("vllm", sleeper.pid, "log", "url")
    assert recorded.started == start_time(sleeper.pid)
    other = Proc("vllm", sleeper.pid, "log", "url", started=(recorded.started or 0) + 1)
    assert not ours(other)
    assert stop_procs([other], grace_s=1) == []
    assert sleeper.poll() is None  # still running
    assert capsys.readouterr().out == (
        f"pid {sleeper.pid} (vllm) is no longer ours (started at {recorded.started}, ours at {other.started}, "
        "in clock ticks after boot): not signalled\n")


def test_our_pid_is_signalled(sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]) -> None:
    recorded = Proc.spawned("vllm", sleeper.pid, "log", "url")
    assert ours(recorded)
    assert stop_procs([recorded], grace_s=5) == ["vllm"]
    assert start_time(sleeper.pid) is None  # ended by SIGTERM (sleep 60 would not end alone) and reaped
    assert capsys.readouterr().out == ""


def test_the_start_time_is_kept_in_the_state_file(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    run = RunDir(tmp_path / "run")
    run.make()
    recorded = Proc.spawned("litellm", sleeper.pid, "log", "url")
    run.write(State(model="x", started_at="t", gateway="g", procs=[recorded]))
    state = run.read()
    assert state is not None
    assert state.procs == [recorded]
    assert _running(run) == state


def test_a_state_whose_pids_are_no_longer_ours_is_stale(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.make()
    me = start_time(os.getpid())
    assert me is not None
    run.write(State(model="x", started_at="t", gateway="g", procs=[Proc("vllm", os.getpid(), "l", "u", me + 1)]))
    assert _running(run) is None
    assert not run.state_file.exists()
