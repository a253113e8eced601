"""When ./runMe.sh starts a private PostgreSQL (confgen/runtime/private_pg.py): never in place of a user's URL,
only when nothing answers at the default; where its socket goes; what the CLI connects to. The real server's
start, use and stop: tests/e2e/test_private_pg.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from confgen.keys.db import DEFAULT_DATABASE_URL
from confgen.runtime import private_pg
from confgen.runtime.rundir import RunDir


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_only_the_default_url_with_nothing_behind_it_gets_a_private_server(listening: int) -> None:
    nowhere = {private_pg.DEFAULT_OVERRIDE: f"postgresql://postgres@127.0.0.1:{closed_port()}/h18b_u"}
    assert private_pg.wanted(DEFAULT_DATABASE_URL, nowhere)
    assert private_pg.wanted(nowhere[private_pg.DEFAULT_OVERRIDE], nowhere)
    # A URL of the user's, even one where nothing answers, is never replaced.
    assert not private_pg.wanted(f"postgresql://me@127.0.0.1:{closed_port()}/mine", nowhere)
    something = {private_pg.DEFAULT_OVERRIDE: f"postgresql://postgres@127.0.0.1:{listening}/h18b_u"}
    assert not private_pg.wanted(DEFAULT_DATABASE_URL, something)


def test_answers_on_tcp_and_on_a_unix_socket(tmp_path: Path, listening: int) -> None:
    assert private_pg.answers(f"postgresql://x@127.0.0.1:{listening}/d")
    assert not private_pg.answers(f"postgresql://x@127.0.0.1:{closed_port()}/d")
    assert not private_pg.answers(f"postgresql://x@/d?host={tmp_path}")
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / ".s.PGSQL.5432"))
        unix.listen()
        assert private_pg.answers(f"postgresql://x@/d?host={tmp_path}")


def test_the_socket_lives_in_the_run_folder_unless_its_path_is_too_long(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert private_pg.socket_dir(run) == tmp_path / "run" / "postgres" / "socket"
    deep = RunDir(tmp_path / ("x" * 90) / "run")
    found = private_pg.socket_dir(deep)
    assert found.name.startswith("confgen-pg-")
    assert found == private_pg.socket_dir(deep)  # the same folder every time for one run folder
    assert private_pg.url_for(run, "confgen") == f"postgresql://postgres@/confgen?host={tmp_path}/run/postgres/socket"


def test_the_cli_uses_the_private_server_only_while_it_runs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert private_pg.resolve(DEFAULT_DATABASE_URL, run, {}) == DEFAULT_DATABASE_URL  # none was started
    mine = "postgresql://me@db.internal/mine"
    assert private_pg.resolve(mine, run, {}) == mine


def test_the_package_ships_the_server_binaries() -> None:
    assert private_pg.is_installed()
    assert {"initdb", "pg_ctl", "postgres"} <= {p.name for p in private_pg.bin_dir().iterdir()}
