"""confgen doctor: every prerequisite of ./runMe.sh with its state and the fix.

A check returns Findings; `run_all` runs them in order, `worst` gives the exit status (0 ok, 1 a warning: the
stack starts but degrades, 3 a failure: the start would fail). The cheap ones (the disk: no network, no
subprocess) are what `up` runs before anything else (report.preflight).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from confgen.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK

State = Literal["ok", "warn", "fail", "skip"]
EXIT_BY_STATE: dict[State, int] = {"ok": EXIT_OK, "skip": EXIT_OK, "warn": EXIT_INVALID, "fail": EXIT_FAILED}


@dataclass(frozen=True)
class Finding:
    check: str
    state: State
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def worst(findings: list[Finding]) -> int:
    return max((EXIT_BY_STATE[f.state] for f in findings), default=EXIT_OK)
