"""PostgreSQL and Redis for the local stack's gateway: check them, create the database and run the
migrations, say plainly what the gateway will do, and hand it their addresses under our own names."""

from __future__ import annotations

import click
import redis
from redis.exceptions import RedisError

from confgen.errors import ConfgenError
from confgen.gateway.config import ENV
from confgen.keys import db, migrations
from confgen.runtime.rundir import RunDir
from confgen.schema import Settings, redis_off

SNAPSHOT_FILE = "keys-snapshot.json"


def spool_dir(settings: Settings, run: RunDir) -> str:
    return settings.LEDGER_SPOOL_DIR or str(run.path / "spool")


def gateway_env(settings: Settings, run: RunDir) -> dict[str, str]:
    """The gateway process's CONFGEN_* settings (never DATABASE_URL: LiteLLM exits on it, FINDINGS)."""
    return {
        ENV["database_url"]: settings.DATABASE_URL,
        ENV["redis_url"]: settings.REDIS_URL,
        ENV["spool_dir"]: spool_dir(settings, run),
        ENV["snapshot"]: str(run.path / SNAPSHOT_FILE),
        ENV["key_ttl_s"]: str(settings.KEY_CACHE_TTL),
        ENV["key_stale_max_s"]: str(settings.KEY_STALE_MAX),
        ENV["max_body_mb"]: str(settings.MAX_BODY_MB),
        ENV["max_header_kb"]: str(settings.MAX_HEADER_KB),
        ENV["body_timeout_s"]: str(settings.BODY_TIMEOUT),
        ENV["relay_lane"]: settings.RELAY_LANE,
        # A parallel slot whose end event never comes frees itself once the request must have ended.
        ENV["slot_ttl_s"]: str(settings.LITELLM_REQUEST_TIMEOUT + 30),
    }


def prepare(settings: Settings, run: RunDir) -> dict[str, str]:
    """Report on both stores (never fails the start: the gateway degrades) and return the gateway's env."""
    url = db.redact(settings.DATABASE_URL)
    try:
        created = db.ensure_database(settings.DATABASE_URL)
        with db.connect(settings.DATABASE_URL) as conn:
            applied = migrations.migrate(conn)
        notes = (["database created"] if created else []) + ([f"migrations: {', '.join(applied)}"] if applied else [])
        click.echo(f"keys and usage ledger: PostgreSQL at {url}{' (' + '; '.join(notes) + ')' if notes else ''}")
    except ConfgenError as exc:
        click.echo(f"warning: {exc}\n  starting anyway: the master key works, API keys only if cached in "
                   f"{run.path / SNAPSHOT_FILE} (unknown keys get 503), and usage rows wait in "
                   f"{spool_dir(settings, run)} until PostgreSQL is back", err=True)
    if redis_off(settings.REDIS_URL):
        click.echo(f"rate limits: counted per gateway instance (REDIS_URL={settings.REDIS_URL or '(empty)'})")
    else:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
            click.echo(f"rate limits: shared through Redis at {db.redact(settings.REDIS_URL)}")
        except (RedisError, OSError, ValueError) as exc:
            click.echo(f"warning: Redis at {db.redact(settings.REDIS_URL)} is not reachable ({exc}): each gateway "
                       "instance counts rate limits on its own until it is back", err=True)
    return gateway_env(settings, run)
