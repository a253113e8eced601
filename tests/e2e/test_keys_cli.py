"""confgen keys / usage and the ledger writer against the machine's real PostgreSQL (a database of their own)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from confgen.keys import db, migrations
from confgen.ledger.row import UsageRow
from confgen.ledger.spool import Spool
from confgen.ledger.writer import LedgerWriter
from tests.e2e.keys_support import MACHINE_PG, confgen, create_key, scalar, scratch_database

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database() as database:
        yield database


def test_migrations_are_recorded_and_idempotent(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        first = migrations.migrate(conn)
        again = migrations.migrate(conn)
        names = [r[0] for r in conn.execute("SELECT name FROM confgen_migrations ORDER BY name")]
    assert again == []
    assert names == [name for name, _ in migrations.MIGRATIONS]
    assert names[:2] == ["001_api_keys", "002_usage"]
    assert first in ([], names)  # the CLI may have run them first


def test_create_prints_the_key_once_and_stores_only_its_hash(url: str) -> None:
    done = confgen("keys", "create", "--alias", "alice", "--models", "tiny-cpu,other", "--rpm", "60", "--tpm",
                   "1000", "--max-parallel", "4", "--budget-tokens", "50000", "--period", "7d", "--expires", "90d",
                   "--owner", "Alice A.", database_url=url)
    lines = done.stdout.splitlines()
    key = lines[2].strip()
    prefix = key[3:15]
    assert lines[0] == f"created key 'alice' (prefix {prefix})"
    assert lines[4] == "This is the only time the key is shown: store it now (only its hash is kept)."
    assert scalar(url, "SELECT key_hash FROM confgen_api_keys WHERE prefix = %s", (prefix,)) == \
        hashlib.sha256(key.encode()).hexdigest()
    stored = scalar(url, "SELECT json_agg(k)::text FROM confgen_api_keys k")
    assert key not in stored
    assert key[16:] not in stored  # not the secret part either
    shown = json.loads(confgen("keys", "show", "alice", "--json", database_url=url).stdout)
    assert shown["prefix"] == prefix
    assert (shown["models"], shown["rpm"], shown["tpm"], shown["max_parallel"]) == (["tiny-cpu", "other"], 60, 1000, 4)
    assert (shown["budget_tokens"], shown["budget_period"], shown["owner"], shown["status"]) == (50000, "7d",
                                                                                                 "Alice A.", "active")
    expires = datetime.fromisoformat(shown["expires_at"])
    assert timedelta(days=89, hours=23) < expires - datetime.now(UTC) <= timedelta(days=90)
    assert "key_hash" not in shown
    assert key not in confgen("keys", "list", database_url=url).stdout


def test_list_show_revoke_by_alias_prefix_and_key(url: str) -> None:
    one = create_key(url, "--alias", "bob")
    two = create_key(url, "--alias", "carol")
    three = create_key(url, "--alias", "dave")
    table = confgen("keys", "list", database_url=url).stdout.splitlines()
    assert table[0].split() == ["ALIAS", "PREFIX", "STATUS", "MODELS", "RPM", "TPM", "PARALLEL", "PRIORITY", "BUDGET",
                                "EXPIRES", "OWNER"]
    assert any(line.split()[:4] == ["bob", one["prefix"], "active", "all"] for line in table)
    assert confgen("keys", "revoke", "bob", database_url=url).stdout == f"revoked key 'bob' (prefix {one['prefix']})\n"
    assert confgen("keys", "revoke", two["prefix"], database_url=url).stdout.startswith("revoked key 'carol'")
    assert confgen("keys", "revoke", three["key"], database_url=url).stdout.startswith("revoked key 'dave'")
    again = confgen("keys", "revoke", "bob", database_url=url).stdout
    assert again == f"key 'bob' (prefix {one['prefix']}) was already revoked\n"
    listed = {k["alias"]: k["status"] for k in json.loads(confgen("keys", "list", "--json", database_url=url).stdout)}
    assert listed["bob"] == listed["carol"] == listed["dave"] == "revoked"
    # A revoked alias may name a new key; show then finds the active one.
    replacement = create_key(url, "--alias", "bob")
    assert json.loads(confgen("keys", "show", "bob", "--json", database_url=url).stdout)["prefix"] == \
        replacement["prefix"]


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["keys", "show", "nobody"], 1, "error: key nobody: no key has this alias or prefix (`confgen keys list` shows "
                                    "aliases and prefixes)\n"),
    (["keys", "revoke", "x' OR '1'='1"], 1, "error: key \"x' OR '1'='1\": no key has this alias or prefix"),
    (["keys", "revoke", "sk-notakey"], 1, "error: key: malformed API key: expected sk-<12 characters a-z, 2-7>_<43 "
                                          "characters> (pass the alias, the prefix, or the whole key as created)\n"),
    (["keys", "revoke", "sk-aaaaaaaaaaaa_" + "a" * 43], 1, "error: key: no such key"),
    (["keys", "create", "--alias", "eve'); DELETE FROM confgen_api_keys; --"], 1, "is not an alias"),
])
def test_bad_input_changes_nothing(url: str, argv: list[str], code: int, message: str) -> None:
    create_key(url, "--alias", f"keep-{secrets.token_hex(3)}")
    before = scalar(url, "SELECT json_agg(k ORDER BY prefix)::text FROM confgen_api_keys k")
    done = confgen(*argv, database_url=url, check=False)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert scalar(url, "SELECT json_agg(k ORDER BY prefix)::text FROM confgen_api_keys k") == before


def test_duplicate_active_alias_is_refused(url: str) -> None:
    create_key(url, "--alias", "frank")
    done = confgen("keys", "create", "--alias", "frank", database_url=url, check=False)
    assert done.returncode == 1
    assert done.stderr == ("error: --alias frank: an active key already has this alias (revoke it first "
                           "(confgen keys revoke frank) or pick another alias)\n")


def test_missing_database_is_created() -> None:
    name = f"confgen_test_{secrets.token_hex(4)}"
    target = f"{MACHINE_PG}/{name}"
    try:
        assert db.ensure_database(target) is True
        assert db.ensure_database(target) is False
        assert confgen("keys", "list", database_url=target).stdout == "no keys yet: confgen keys create --alias NAME\n"
    finally:
        with psycopg.connect(f"{MACHINE_PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def ledger_rows(n: int, *, key: str, model: str, start: datetime, status: int = 200) -> list[UsageRow]:
    return [UsageRow(request_id=secrets.token_hex(8), ts=start + timedelta(milliseconds=i), status=status,
                     key_prefix=key, key_alias=f"alias-{key}", model=model, prompt_tokens=10, completion_tokens=5,
                     latency_ms=float(i + 1)) for i in range(n)]


def test_writer_batches_and_skips_duplicates_then_usage_reports(url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    rows = (ledger_rows(100, key="kkkkkkkkkkk1", model="m1", start=now - timedelta(hours=1))
            + ledger_rows(20, key="kkkkkkkkkkk2", model="m2", start=now - timedelta(minutes=5), status=429)
            + ledger_rows(7, key="kkkkkkkkkkk1", model="m1", start=now - timedelta(days=3)))
    writer = LedgerWriter(url, Spool(tmp_path / "spool"), interval_s=0.05)
    writer.start()
    for row in rows + rows[:30]:  # 30 delivered twice
        writer.put(row)
    writer.close()
    assert (writer.inserted, writer.duplicates, writer.spool.spooled) == (127, 30, 0)
    assert scalar(url, "SELECT count(*) FROM confgen_usage WHERE key_prefix LIKE 'kkkkkkkkkkk%%'") == 127

    report = json.loads(confgen("usage", "--since", "1d", "--by", "key", "--json", database_url=url).stdout)
    lines = {r["group"]: r for r in report["rows"]}
    one = lines["alias-kkkkkkkkkkk1 (kkkkkkkkkkk1)"]
    assert (one["requests"], one["errors"], one["prompt_tokens"], one["completion_tokens"], one["total_tokens"]) == \
        (100, 0, 1000, 500, 1500)
    assert (one["p50_ms"], one["p95_ms"], one["p99_ms"]) == (50.5, 95.05, 99.01)
    two = lines["alias-kkkkkkkkkkk2 (kkkkkkkkkkk2)"]
    assert (two["requests"], two["errors"], two["p50_ms"]) == (20, 20, None)  # latency of successes only
    by_model = confgen("usage", "--since", "7d", "--by", "model", "--csv", database_url=url).stdout.splitlines()
    assert by_model[0] == "group,requests,errors,prompt_tokens,completion_tokens,total_tokens,p50_ms,p95_ms,p99_ms"
    assert by_model[1].startswith("m1,107,0,1070,535,1605,")
    table = confgen("usage", "--by", "day", database_url=url).stdout.splitlines()
    assert table[0].split()[:3] == ["DAY", "REQUESTS", "ERRORS"]
