"""confgen keys create | list | revoke | show: API keys in PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import click
import psycopg

from confgen.commands import project_from
from confgen.commands.output import echo_json, table
from confgen.durations import format_duration, parse_duration
from confgen.errors import EXIT_FAILED, ConfgenError
from confgen.keys import db, migrations, store
from confgen.keys.record import KeyRecord, Limits
from confgen.load import load_vars
from confgen.runtime import private_pg
from confgen.runtime.rundir import RunDir


class Duration(click.ParamType[int]):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def open_db(ctx: click.Context) -> psycopg.Connection:
    """The project's database (created and migrated if need be), or a clean error naming it."""
    project = project_from(ctx)
    environ = dict(os.environ)
    # The stack's private PostgreSQL while it runs (DATABASE_URL left at the default; runtime/private_pg.py).
    url = private_pg.resolve(load_vars(project).settings.DATABASE_URL, RunDir.for_root(project.root, environ), environ)
    db.ensure_database(url)
    conn = db.connect(url)
    try:
        migrations.migrate(conn)
    except psycopg.Error as exc:
        conn.close()
        raise ConfgenError.one(f"DATABASE_URL={db.redact(url)}", f"cannot set up the tables: {db.first_line(exc)}",
                               "check that the role may create tables in this database", EXIT_FAILED) from None
    return conn


def describe(record: KeyRecord, now: datetime) -> dict[str, Any]:
    """A key as shown (never its hash)."""
    lim = record.limits
    return {
        "alias": record.alias, "prefix": record.prefix, "status": record.status(now), "owner": record.owner,
        "models": list(record.models) if record.models is not None else None,
        "rpm": lim.rpm, "tpm": lim.tpm, "max_parallel": lim.max_parallel, "priority": record.priority,
        "budget_tokens": lim.budget_tokens,
        "budget_period": format_duration(lim.budget_period_s) if lim.budget_period_s else None,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "expires_at": record.expires_at.isoformat(timespec="seconds") if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat(timespec="seconds") if record.revoked_at else None,
    }


HEADER = ("ALIAS", "PREFIX", "STATUS", "MODELS", "RPM", "TPM", "PARALLEL", "PRIORITY", "BUDGET", "EXPIRES", "OWNER")


def _row(d: dict[str, Any]) -> list[str]:
    def show(value: Any) -> str:
        return "-" if value is None else str(value)

    budget = f"{d['budget_tokens']}/{d['budget_period']}" if d["budget_tokens"] else "-"
    return [d["alias"], d["prefix"], d["status"], ",".join(d["models"]) if d["models"] else "all", show(d["rpm"]),
            show(d["tpm"]), show(d["max_parallel"]), show(d["priority"]), budget, (d["expires_at"] or "-")[:16],
            show(d["owner"])]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
LIMIT = click.IntRange(min=1)


@click.group("keys")
def group() -> None:
    """API keys: create (the key is shown once), list, revoke, show. Stored in DATABASE_URL."""


@group.command("create")
@click.option("--alias", required=True, help="A name for the key: 1-64 letters, digits, '.', '_', '-'.")
@click.option("--models", default=None, metavar="M1,M2", help="Models the key may use (default: every model).")
@click.option("--rpm", type=LIMIT, default=None, help="Requests per minute (all gateway instances together).")
@click.option("--tpm", type=LIMIT, default=None, help="Tokens (prompt + completion) per minute.")
@click.option("--max-parallel", type=LIMIT, default=None, help="Requests in flight at once.")
@click.option("--budget-tokens", type=LIMIT, default=None, help="Tokens per --period.")
@click.option("--period", type=Duration(), default=None, help="Budget period, e.g. 30d (default 30d).")
@click.option("--expires", type=Duration(), default=None, help="Lifetime, e.g. 90d (default: never).")
@click.option("--owner", default=None, help="Who the key is for (free text, shown in list and usage).")
@click.option("--priority", type=int, default=None, help="Lower is served first: the order of requests waiting "
              "for an on-demand model, and vLLM's request priority where a model runs with --scheduling-policy "
              "priority (-1000 to 1000; default: 0).")
@json_option
@click.pass_context
def create(ctx: click.Context, *, alias: str, models: str | None, rpm: int | None, tpm: int | None,
           max_parallel: int | None, budget_tokens: int | None, period: int | None, expires: int | None,
           owner: str | None, priority: int | None, as_json: bool) -> int:
    """Create a key and print it once: only its hash is stored."""
    if period is not None and budget_tokens is None:
        raise ConfgenError.one("--period", "a period needs --budget-tokens", "add --budget-tokens N", exit_code=2)
    if budget_tokens is not None and period is None:
        period = parse_duration("30d")
    model_list = tuple(m.strip() for m in models.split(",") if m.strip()) if models is not None else None
    spec = store.NewKey(alias=alias, owner=owner, models=model_list, expires_in_s=expires, priority=priority,
                        limits=Limits(rpm=rpm, tpm=tpm, max_parallel=max_parallel, budget_tokens=budget_tokens,
                                      budget_period_s=period))
    problems = spec.problems()
    if problems:
        raise ConfgenError.one("confgen keys create", "; ".join(problems))
    with open_db(ctx) as conn:
        key, record = store.create(conn, spec)
    shown = describe(record, datetime.now(UTC))
    if as_json:
        echo_json({"key": key, **shown})
        return 0
    click.echo(f"created key {record.alias!r} (prefix {record.prefix})\n\n    {key}\n\n"
               "This is the only time the key is shown: store it now (only its hash is kept).")
    return 0


@group.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> int:
    """Every key, revoked and expired ones too, oldest first."""
    with open_db(ctx) as conn:
        records = store.list_keys(conn)
    now = datetime.now(UTC)
    shown = [describe(r, now) for r in records]
    if as_json:
        echo_json(shown)
    elif shown:
        click.echo(table(HEADER, [_row(d) for d in shown]))
    else:
        click.echo("no keys yet: confgen keys create --alias NAME")
    return 0


@group.command("revoke")
@click.argument("ident", metavar="ALIAS|PREFIX|KEY")
@json_option
@click.pass_context
def revoke(ctx: click.Context, ident: str, as_json: bool) -> int:
    """Revoke a key: every gateway refuses it within KEY_CACHE_TTL seconds."""
    with open_db(ctx) as conn:
        record, now_revoked = store.revoke(conn, ident)
    if as_json:
        echo_json({**describe(record, datetime.now(UTC)), "revoked_now": now_revoked})
    elif now_revoked:
        click.echo(f"revoked key {record.alias!r} (prefix {record.prefix})")
    else:
        click.echo(f"key {record.alias!r} (prefix {record.prefix}) was already revoked")
    return 0


@group.command("show")
@click.argument("ident", metavar="ALIAS|PREFIX|KEY")
@json_option
@click.pass_context
def show(ctx: click.Context, ident: str, as_json: bool) -> int:
    """One key: its limits, models and lifetime (an alias shows its active key, else its newest)."""
    with open_db(ctx) as conn:
        record = store.find(conn, ident)
    shown = describe(record, datetime.now(UTC))
    if as_json:
        echo_json(shown)
    else:
        click.echo("\n".join(f"{name + ':':15} {'-' if value is None else value}" for name, value in shown.items()
                             if not isinstance(value, list)) + f"\n{'models:':15} "
                   + (", ".join(shown["models"]) if shown["models"] else "all"))
    return 0


command = group
