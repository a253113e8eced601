"""confgen keys / usage: input refused before any database is touched, and a clean error (exit 3, no
password, the fix) when the database is unreachable. The database paths run in tests/e2e/test_keys_cli.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

RunCli = Callable[..., Result]
# A socket folder that does not exist: libpq fails at once, no network involved.
NO_DB = "postgresql://postgres:s3cret@/confgen?host=/nonexistent-confgen-socket-dir"


@pytest.mark.parametrize(("args", "message"), [
    (["--alias", "x'; DROP TABLE confgen_api_keys; --"],
     "error: confgen keys create: --alias: \"x'; DROP TABLE confgen_api_keys; --\" is not an alias: use 1-64 "
     "letters, digits, '.', '_', '-' (starting with a letter or digit)\n"),
    (["--alias", "a" * 65], "is not an alias"),
    (["--alias", "ok\n"], "is not an alias"),
    (["--alias", "ok", "--models", "good,bad model"], "error: confgen keys create: --models: 'bad model' is not a "
                                                     "model name\n"),
    (["--alias", "ok", "--models", ","], "--models: give at least one model name"),
    (["--alias", "ok", "--owner", "a\x00b"], "--owner: expected 1-200 printable characters"),
])
def test_bad_input_exit_1(run_cli: RunCli, args: list[str], message: str) -> None:
    result = run_cli("keys", "create", *args, env={"DATABASE_URL": NO_DB})
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--alias", "a", "--rpm", "-5"], "Invalid value for '--rpm': -5 is not in the range x>=1."),
    (["--alias", "a", "--tpm", "0"], "Invalid value for '--tpm': 0 is not in the range x>=1."),
    (["--alias", "a", "--max-parallel", "-1"], "Invalid value for '--max-parallel'"),
    (["--alias", "a", "--budget-tokens", "-100"], "Invalid value for '--budget-tokens'"),
    (["--alias", "a", "--expires", "tomorrow"], "Invalid value for '--expires': expected a duration like 30d"),
    (["--alias", "a", "--period", "30d"], "error: --period: a period needs --budget-tokens (add --budget-tokens N)"),
    (["--rpm", "5"], "Missing option '--alias'"),
])
def test_usage_errors_exit_2(run_cli: RunCli, args: list[str], message: str) -> None:
    result = run_cli("keys", "create", *args, env={"DATABASE_URL": NO_DB})
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize("argv", [["keys", "list"], ["keys", "create", "--alias", "a"], ["keys", "show", "a"],
                                  ["keys", "revoke", "a"], ["usage"]])
def test_unreachable_database_exit_3_without_password(run_cli: RunCli, argv: list[str]) -> None:
    result = run_cli(*argv, env={"DATABASE_URL": NO_DB})
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "error: DATABASE_URL=postgresql://postgres:***@/confgen?host=/nonexistent-confgen-socket-dir: PostgreSQL "
        "is not reachable: ")
    assert result.stderr.rstrip().endswith(
        "(start PostgreSQL, or point DATABASE_URL (vars.env or the environment) at a running server)")
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output


def test_bad_url_is_a_clean_error(run_cli: RunCli) -> None:
    result = run_cli("keys", "list", env={"DATABASE_URL": "postgresql://x:y@[::1"})
    assert result.exit_code in (1, 3)
    assert "error: DATABASE_URL=" in result.stderr
    assert "Traceback" not in result.output


def test_usage_rejects_json_and_csv_together(run_cli: RunCli) -> None:
    result = run_cli("usage", "--json", "--csv", env={"DATABASE_URL": NO_DB})
    assert result.exit_code == 2
    assert "pick one of --json and --csv" in result.stderr


def test_vars_env_sets_the_database(run_cli: RunCli, write_vars: Callable[[str], Path]) -> None:
    write_vars(f"DATABASE_URL={NO_DB}\n")
    result = run_cli("keys", "list")
    assert result.exit_code == 3
    assert "DATABASE_URL=postgresql://postgres:***@/confgen" in result.stderr
