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
