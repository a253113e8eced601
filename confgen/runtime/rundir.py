"""One git-ignored run folder holds the state, logs, pids, generated configs and scratch space."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confgen.atomic import write_atomic


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    url: str
    # The start time of `pid` when it was spawned (start_time): after a reboot the pid may be another
    # process's. None in a state file of an older confgen: such a pid is trusted as before.
    started: int | None = None

    @classmethod
    def spawned(cls, name: str, pid: int, log: str, url: str) -> Proc:
        return cls(name, pid, log, url, start_time(pid))


@dataclass
class State:
    model: str
    started_at: str
    gateway: str
    procs: list[Proc] = field(default_factory=list)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def for_root(cls, root: Path, environ: dict[str, str]) -> RunDir:
        return cls(Path(environ.get("CONFGEN_RUN_DIR") or root / "run").resolve())

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def generated(self) -> Path:
        return self.path / "generated"

    @property
    def scratch(self) -> Path:
        return self.path / "scratch"

    def make(self) -> None:
        for folder in (self.logs, self.generated, self.scratch / "tmp", self.scratch / "cache"):
            folder.mkdir(parents=True, exist_ok=True)

    def read(self) -> State | None:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            procs = [Proc(**p) for p in data.pop("procs")]
            return State(**data, procs=procs)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, state: State) -> None:
        write_atomic(self.state_file, json.dumps(asdict(state), indent=2) + "\n")

    def clear(self) -> None:
        self.state_file.unlink(missing_ok=True)


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot: field 22 of /proc/<pid>/stat (proc(5)); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # the name, field 2, may hold spaces and ")"
    except (OSError, IndexError):
        return None
    return int(fields[19])  # fields[0] is field 3


def ours(proc: Proc) -> bool:
    """The process we spawned is still running under its pid (not a later process given the same pid)."""
    return alive(proc.pid) and (proc.started is None or start_time(proc.pid) == proc.started)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
