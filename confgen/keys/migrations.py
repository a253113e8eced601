"""Ordered, named, idempotent migrations, recorded in confgen_migrations; run at start-up and by the CLI.

Append new migrations at the end; never edit or reorder applied ones. An advisory lock makes concurrent
starts (several gateway workers, the CLI) apply each migration once.
"""

from __future__ import annotations

import psycopg

LOCK_ID = 0x636F6E6667656E  # "confgen"

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("001_api_keys", """
        CREATE TABLE confgen_api_keys (
            prefix          text PRIMARY KEY,
            key_hash        text NOT NULL,
            alias           text NOT NULL,
            owner           text,
            models          text[],
            rpm             integer CHECK (rpm > 0),
            tpm             integer CHECK (tpm > 0),
            max_parallel    integer CHECK (max_parallel > 0),
            budget_tokens   bigint CHECK (budget_tokens > 0),
            budget_period_s integer CHECK (budget_period_s > 0),
            created_at      timestamptz NOT NULL DEFAULT now(),
            expires_at      timestamptz,
            revoked_at      timestamptz,
            CHECK ((budget_tokens IS NULL) = (budget_period_s IS NULL))
        );
        -- One active key per alias; a revoked alias may be given to its replacement.
        CREATE UNIQUE INDEX confgen_api_keys_active_alias ON confgen_api_keys (alias) WHERE revoked_at IS NULL;
    """),
    ("002_usage", """
        CREATE TABLE confgen_usage (
            request_id        text PRIMARY KEY,
            ts                timestamptz NOT NULL,
            call_id           text,
            key_prefix        text,
            key_alias         text,
            model             text,
            deployment        text,
            route             text,
            prompt_tokens     integer NOT NULL DEFAULT 0,
            completion_tokens integer NOT NULL DEFAULT 0,
            latency_ms        double precision,
            ttft_ms           double precision,
            status            integer NOT NULL,
            error_class       text,
            reason            text,
            stream            boolean,
            instance          text
        );
        CREATE INDEX confgen_usage_ts ON confgen_usage (ts);
        CREATE INDEX confgen_usage_key_ts ON confgen_usage (key_prefix, ts);
    """),
    # On-demand models (docs/on-demand.md): how long the request was held until its model was ready.
    ("003_usage_model_wait", """
        ALTER TABLE confgen_usage ADD COLUMN model_wait_ms double precision;
    """),
    # A key's priority (docs/keys.md): the order of requests waiting for an on-demand model, and vLLM's request
    # `priority` under --scheduling-policy priority (lower first, as vLLM's; NULL: 0).
    ("004_api_keys_priority", """
        ALTER TABLE confgen_api_keys ADD COLUMN priority integer CHECK (priority BETWEEN -1000 AND 1000);
    """),
)


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply what is missing; return the names applied now (empty when up to date)."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute("""CREATE TABLE IF NOT EXISTS confgen_migrations (
                            name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {row[0] for row in conn.execute("SELECT name FROM confgen_migrations")}
        for name, statement in MIGRATIONS:
            if name in done:
                continue
            conn.execute(statement.encode())
            conn.execute("INSERT INTO confgen_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    return applied
