"""Process trees for the gateway benchmark: CPU time and memory from /proc, core pinning, start and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    kids = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kids.get(current, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (threads included), plus that of their children that ended
    and were reaped (cutime, cstime): a worker that a supervisor restarts keeps counting."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLOCK_TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def pin(pids: list[int], cpus: set[int]) -> None:
    """What `taskset -a -p` does: every thread of every process in the list runs on these cores only
    (threads and processes made later inherit it)."""
    for pid in pids:
        try:
            tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # a thread that just ended


@dataclass
class Server:
    """A server process tree under test (a gateway, nginx, or the simulator)."""

    name: str
    pid: int
    url: str
    log: Path
    cpus: set[int] | None = None
    peak_rss: int = 0
    pids: list[int] = field(default_factory=list)

    def refresh(self) -> None:
        self.pids = tree(self.pid)

    def cpu(self) -> float:
        """The whole tree as it is now (a restarted worker is a new process)."""
        self.refresh()
        return cpu_seconds(self.pids)

    def sample_memory(self) -> None:
        self.refresh()
        self.peak_rss = max(self.peak_rss, rss_bytes(self.pids))


@contextmanager
def memory_sampler(servers: list[Server], every_s: float = 0.25) -> Iterator[None]:
    """Samples every server's RSS (its whole process tree) in the background; peaks land in peak_rss."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            for server in servers:
                server.sample_memory()

    thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # own session: the whole group is stopped at the end
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until(ok: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up; see {log}:\n{tail(log)}")
        if ok():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not become healthy within {timeout_s:.0f} s; see {log}:\n{tail(log)}")


def healthy(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after the grace time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
