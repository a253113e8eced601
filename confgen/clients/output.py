"""A client's configuration as printed and as written: files for their usual places, shell lines, notes.

`--write` backs up what is there (`<file>.bak-<UTC time>`, same mode) before it writes; JSON files are
merged (our keys replace theirs, the rest stays), other formats are replaced whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.errors import ConfgenError

Merge = Callable[[str], str]  # existing text -> the text to write


@dataclass(frozen=True)
class ConfigFile:
    path: Path  # the client's usual place, resolved against HOME / CODEX_HOME / XDG_CONFIG_HOME
    text: str  # what is printed, and written when there is nothing to merge with
    merge: Merge | None = None  # how to fold our settings into an existing file (None: replace it)
    mode: int = 0o644


@dataclass(frozen=True)
class ClientConfig:
    client: str
    files: tuple[ConfigFile, ...] = ()
    shell: tuple[str, ...] = ()  # lines for the user's shell (exports, the command to run)
    snippets: tuple[tuple[str, str], ...] = ()  # (title, text) printed as they are: code, settings to paste
    notes: tuple[str, ...] = ()  # what to do by hand, caveats
    write_hint: str = ""  # why --write has nothing to write, when `files` is empty

    def render(self) -> str:
        """Everything, as printed by `confgen client`."""
        parts = []
        for f in self.files:
            parts.append(f"# --- {f.path} ---\n{f.text.rstrip()}\n")
        if self.shell:
            parts.append("# --- shell ---\n" + "\n".join(self.shell) + "\n")
        for title, text in self.snippets:
            parts.append(f"# --- {title} ---\n{text.rstrip()}\n")
        if self.notes:
            parts.append("\n".join(f"# {line}" if line else "#" for line in self.notes) + "\n")
        return "\n".join(parts)


@dataclass
class Written:
    path: Path
    backup: Path | None = None
    merged: bool = False
    unchanged: bool = False


def write(config: ClientConfig, now: datetime | None = None) -> list[Written]:
    """Write each file to its place, backing up what is there first."""
    if not config.files:
        raise ConfgenError.one(f"confgen client {config.client} --write", config.write_hint or "nothing to write",
                               "run without --write and follow the printed steps", exit_code=2)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return [_write_one(f, stamp) for f in config.files]


def _write_one(f: ConfigFile, stamp: str) -> Written:
    done = Written(f.path)
    text = f.text
    if f.path.exists():
        if not f.path.is_file():
            raise ConfgenError.one(str(f.path), "exists and is not a file", "move it away, then run again")
        try:
            old = f.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfgenError.one(str(f.path), f"cannot read it: {exc}", "fix or move it, then run again") from None
        if f.merge is not None and old.strip():
            text = f.merge(old)
            done.merged = True
        if text == old:
            done.unchanged = True
            return done
        done.backup = f.path.with_name(f"{f.path.name}.bak-{stamp}")
        shutil.copy2(f.path, done.backup)
    write_atomic(f.path, text, mode=f.mode)
    return done
