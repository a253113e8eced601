"""confgen usage: requests, errors, tokens and latency percentiles from the usage ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from confgen.commands.keys import Duration, open_db
from confgen.commands.output import echo_csv, echo_json, table
from confgen.ledger.report import GROUPS, UsageLine, usage

HEADER = ("REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "TOTAL TOKENS", "P50 MS", "P95 MS", "P99 MS")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cells(line: UsageLine) -> list[str]:
    return [str(line.requests), str(line.errors), str(line.prompt_tokens), str(line.completion_tokens),
            str(line.total_tokens), _ms(line.p50_ms), _ms(line.p95_ms), _ms(line.p99_ms)]


@click.command("usage")
@click.option("--since", type=Duration(), default="1d", show_default=True, help="How far back, e.g. 1h, 7d.")
@click.option("--by", type=click.Choice(sorted(GROUPS)), default="key", show_default=True, help="One line per ...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.pass_context
def command(ctx: click.Context, since: int, by: str, as_json: bool, as_csv: bool) -> int:
    """Usage from the ledger in DATABASE_URL (rows still in a gateway's spool count once replayed)."""
    if as_json and as_csv:
        raise click.UsageError("pick one of --json and --csv")
    start = datetime.now(UTC) - timedelta(seconds=since)
    with open_db(ctx) as conn:
        lines = usage(conn, start, by)
    if as_json:
        echo_json({"since": start.isoformat(timespec="seconds"), "by": by, "rows": [x.to_json() for x in lines]})
    elif as_csv:
        fields = ["group", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "p50_ms",
                  "p95_ms", "p99_ms"]
        echo_csv(fields, [[x.to_json()[f] for f in fields] for x in lines])
    elif not lines:
        click.echo(f"no requests since {start:%Y-%m-%d %H:%M} UTC")
    else:
        click.echo(table((by.upper(), *HEADER), [[x.group, *_cells(x)] for x in lines]))
    return 0
