"""confgen.atomic: a reader never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from confgen.atomic import write_atomic


def test_writes_the_file_and_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.yaml"
    write_atomic(path, "x: 1\n")
    assert path.read_text() == "x: 1\n"
    assert os.listdir(path.parent) == ["config.yaml"]
    assert path.stat().st_mode & 0o777 == 0o600  # owner-only unless asked


def test_a_mode_can_be_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "shared.txt"
    write_atomic(path, "x\n", mode=0o644)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_previous_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old: content\n" * 1000)
    path.chmod(0o644)
    write_atomic(path, "new: 1\n")
    assert path.read_text() == "new: 1\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old\n")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["config.yaml"]
