"""Keys in PostgreSQL (parameterised SQL only): create, list, find, revoke, and the gateway's lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from confgen.errors import ConfgenError
from confgen.keys import keyformat
from confgen.keys.record import ALIAS_PATTERN, MODEL_PATTERN, PRIORITY_RANGE, KeyRecord, Limits

COLUMNS = ("prefix, key_hash, alias, owner, models, rpm, tpm, max_parallel, budget_tokens, budget_period_s, "
           "created_at, expires_at, revoked_at, priority")
SELECT = f"SELECT {COLUMNS} FROM confgen_api_keys"  # noqa: S608 - constant column list
BY_PREFIX = SELECT + " WHERE prefix = %s"
REVOKE = ("UPDATE confgen_api_keys SET revoked_at = now() "  # noqa: S608 - constant column list
          f"WHERE prefix = %s AND revoked_at IS NULL RETURNING {COLUMNS}")


@dataclass(frozen=True)
class NewKey:
    """What `confgen keys create` asks for; validated before anything is written."""

    alias: str
    owner: str | None = None
    models: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)
    expires_in_s: int | None = None
    priority: int | None = None

    def problems(self) -> list[str]:
        found = []
        if not ALIAS_PATTERN.fullmatch(self.alias):
            found.append(f"--alias: {self.alias!r} is not an alias: use 1-64 letters, digits, '.', '_', '-' "
                         "(starting with a letter or digit)")
        for model in self.models or ():
            if not MODEL_PATTERN.fullmatch(model):
                found.append(f"--models: {model!r} is not a model name")
        if self.models is not None and not self.models:
            found.append("--models: give at least one model name, or leave --models out for every model")
        if self.owner is not None and (not 0 < len(self.owner) <= 200 or not self.owner.isprintable()):
            found.append("--owner: expected 1-200 printable characters")
        low, high = PRIORITY_RANGE
        if self.priority is not None and not low <= self.priority <= high:
            found.append(f"--priority: expected an integer from {low} to {high} (lower is served first), "
                         f"got {self.priority}")
        return found


def from_row(row: Sequence[Any]) -> KeyRecord:
    (prefix, key_hash, alias, owner, models, rpm, tpm, parallel, budget, period, created, expires, revoked,
     priority) = row
    return KeyRecord(prefix=prefix, key_hash=key_hash, alias=alias, owner=owner,
                     models=tuple(models) if models is not None else None,
                     limits=Limits(rpm=rpm, tpm=tpm, max_parallel=parallel, budget_tokens=budget,
                                   budget_period_s=period),
                     created_at=created, expires_at=expires, revoked_at=revoked, priority=priority)


def create(conn: psycopg.Connection, spec: NewKey) -> tuple[str, KeyRecord]:
    """Insert a new key; return the key (shown once, never stored) and its record."""
    problems = spec.problems()
    if problems:
        raise ConfgenError.one("confgen keys create", "; ".join(problems))
    key, prefix = keyformat.generate()
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=spec.expires_in_s) if spec.expires_in_s else None
    lim = spec.limits
    try:
        row = conn.execute(
            f"INSERT INTO confgen_api_keys ({COLUMNS}) "  # noqa: S608 - constant column list
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) RETURNING " + COLUMNS,
            (prefix, keyformat.hash_key(key), spec.alias, spec.owner,
             list(spec.models) if spec.models is not None else None, lim.rpm, lim.tpm, lim.max_parallel,
             lim.budget_tokens, lim.budget_period_s, now, expires, spec.priority)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise ConfgenError.one(f"--alias {spec.alias}", "an active key already has this alias",
                               f"revoke it first (confgen keys revoke {spec.alias}) or pick another alias") from None
    if row is None:
        raise ConfgenError.one("confgen keys create", "the database returned no row")
    return key, from_row(row)


def list_keys(conn: psycopg.Connection) -> list[KeyRecord]:
    return [from_row(r) for r in conn.execute(SELECT + " ORDER BY created_at, prefix").fetchall()]


def find(conn: psycopg.Connection, ident: str) -> KeyRecord:
    """A key by alias (its active key, else its newest), prefix, or the whole key."""
    if ident.startswith("sk-"):
        try:
            prefix = keyformat.parse_prefix(ident)
        except keyformat.MalformedKey as exc:
            raise ConfgenError.one("key", str(exc),
                                   "pass the alias, the prefix, or the whole key as created") from None
        record = lookup(conn, prefix)
        if record is None or not keyformat.matches(ident, record.key_hash):
            raise ConfgenError.one("key", "no such key", "`confgen keys list` shows the keys")
        return record
    rows = conn.execute(SELECT + " WHERE prefix = %s OR alias = %s "
                        "ORDER BY (revoked_at IS NULL) DESC, created_at DESC", (ident, ident)).fetchall()
    found = [from_row(r) for r in rows]
    by_prefix = [r for r in found if r.prefix == ident]
    if by_prefix:
        return by_prefix[0]
    if not found:
        shown = ident if ALIAS_PATTERN.fullmatch(ident) else repr(ident)
        raise ConfgenError.one(f"key {shown}", "no key has this alias or prefix",
                               "`confgen keys list` shows aliases and prefixes")
    return found[0]


def revoke(conn: psycopg.Connection, ident: str) -> tuple[KeyRecord, bool]:
    """Revoke the key; (record, True) if revoked now, (record, False) if it already was."""
    record = find(conn, ident)
    if record.revoked_at is not None:
        return record, False
    row = conn.execute(REVOKE, (record.prefix,)).fetchone()
    if row is None:  # revoked meanwhile
        return find(conn, record.prefix), False
    return from_row(row), True


def lookup(conn: psycopg.Connection, prefix: str) -> KeyRecord | None:
    row = conn.execute(BY_PREFIX, (prefix,)).fetchone()
    return from_row(row) if row else None


async def lookup_async(conn: psycopg.AsyncConnection, prefix: str) -> KeyRecord | None:
    cur = await conn.execute(BY_PREFIX, (prefix,))
    row = await cur.fetchone()
    return from_row(row) if row else None
