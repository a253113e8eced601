"""One exception base for user errors; the CLI edge turns it into a message and an exit code."""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_FAILED = 3


@dataclass
class Problem:
    """One thing wrong: where (file, key path), what, and how to fix it."""

    where: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text} ({self.fix})" if self.fix else text


@dataclass
class ConfgenError(Exception):
    """A user error: bad input, not a bug. Carries one or more problems."""

    problems: list[Problem] = field(default_factory=list)
    exit_code: int = EXIT_INVALID

    @classmethod
    def one(cls, where: str, what: str, fix: str = "", exit_code: int = EXIT_INVALID) -> ConfgenError:
        return cls([Problem(where, what, fix)], exit_code)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class LaunchError(ConfgenError):
    """A launch that failed (a process died, a port is taken): exit 3."""

    def __init__(self, where: str, what: str, fix: str = "") -> None:
        super().__init__([Problem(where, what, fix)], EXIT_FAILED)
