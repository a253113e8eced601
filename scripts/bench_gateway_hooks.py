#!/usr/bin/env python3
"""Benchmark: what our gateway hooks (custom_auth with keys, limits and the usage ledger) cost, against
the same LiteLLM without them, and the ledger's sustained insert rate into PostgreSQL; one run, one machine.

Method: one simulator (zero latency model, 8 tokens) serves two LiteLLM gateways started side by side
from the same rendered template: "hooks" (our custom_auth + the ledger callback, an API key from
PostgreSQL with rpm/tpm/parallel limits, so every request takes the Redis admission script and the
settle script, and writes a ledger row) and "bare" (the same config without custom_auth and without
the ledger callback: LiteLLM's own master-key check). The Prometheus callback is in both. Rounds
alternate the two gateways: `wrk -t1 -c16` for --seconds (requests/s, p50, p99), then sequential single
requests (added latency at concurrency 1, medians). wrk and everything else share the same cores.
Throughput cost = 1 - hooks rps / bare rps (goal: under 10%). Then the ledger writer alone inserts
--rows rows (batches of 1000, unnest + ON CONFLICT) into a scratch database: rows/s from the first put
to the last commit (goal: at least 5,000 rows/s). Databases, Redis keys and processes are removed
afterwards. Results go to docs/benchmarks.md (this script's section only).

Usage: .venv/bin/python scripts/bench_gateway_hooks.py [--rounds 3] [--seconds 5] [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchdoc
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confgen.ledger.row import UsageRow  # noqa: E402 - after the path is set
from confgen.ledger.spool import Spool  # noqa: E402
from confgen.ledger.writer import LedgerWriter  # noqa: E402
from tests.e2e.keys_support import (  # noqa: E402
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    redis_namespace,
    render_config,
    scalar,
    scratch_database,
)
from tests.simproc import running_sim  # noqa: E402

SECTION = "## Gateway hooks (keys, limits, usage ledger): cost and ledger insert rate"
SIM_PORT, HOOKS_PORT, BARE_PORT = 18440, 14440, 14441
BODY = json.dumps({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hello there"}]})


def bare_config(hooks: Path) -> Path:
    doc = yaml.safe_load(hooks.read_text())
    doc["general_settings"].pop("custom_auth")
    doc["litellm_settings"]["callbacks"] = [c for c in doc["litellm_settings"]["callbacks"] if "confgen" not in c]
    path = hooks.with_name("config-bare.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process, all its threads (our ledger writer thread included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(gateway: Gateway, key: str, seconds: int, count: int) -> dict[str, float]:
    if gateway.process is None:
        raise RuntimeError(f"gateway {gateway.port} is not running")
    before = cpu_seconds(gateway.process.pid)
    result = wrk(gateway.url, key, seconds)
    result["cpu_ms"] = (cpu_seconds(gateway.process.pid) - before) * 1000 / result["requests"]
    result["seq_ms"] = sequential(gateway.url, key, count)
    return result


def wrk(url: str, key: str, seconds: int, connections: int = 16) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\nwrk.headers["Content-Type"] = "application/json"\n'
                     f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
                              f"{url}/v1/chat/completions"], capture_output=True, text=True, timeout=seconds + 60,
                             check=True).stdout
    finally:
        Path(script.name).unlink()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} failed requests:\n{out}")

    def ms(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{out}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {"rps": float(rps.group(1)), "p50": ms("50"), "p99": ms("99"), "requests": float(total.group(1))}


def sequential(url: str, key: str, count: int) -> float:
    """Median milliseconds of `count` single requests, one after another, on one connection."""
    times = []
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as c:
        for _ in range(count):
            start = time.perf_counter()
            c.post(f"{url}/v1/chat/completions", content=BODY).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def insert_rate(url: str, rows: int, folder: Path) -> tuple[float, int]:
    start_ts = datetime.now(UTC)
    batch = [UsageRow(request_id=secrets.token_hex(12), ts=start_ts + timedelta(microseconds=i), status=200,
                      call_id=secrets.token_hex(12), key_prefix="benchbenchbe", key_alias="bench", model=MODEL,
                      deployment="http://127.0.0.1:8000/v1", route="/v1/chat/completions", prompt_tokens=12,
                      completion_tokens=8, latency_ms=12.5, stream=False, instance="bench") for i in range(rows)]
    writer = LedgerWriter(url, Spool(folder / "spool"), interval_s=0.05)
    writer.start()
    began = time.perf_counter()
    for row in batch:
        writer.put(row)
    writer.close(timeout_s=300)
    elapsed = time.perf_counter() - began
    stored = int(scalar(url, "SELECT count(*) FROM confgen_usage WHERE key_prefix = 'benchbenchbe'"))
    return rows / elapsed, stored


def write_section(text: str) -> None:
    benchdoc.write_section(SECTION, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--seconds", type=int, default=5, choices=range(1, 61), metavar="1..60")
    parser.add_argument("--sequential", type=int, default=50, choices=range(5, 1001), metavar="5..1000")
    parser.add_argument("--rows", type=int, default=50_000, choices=range(1000, 1_000_001), metavar="1000..1000000")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install -y wrk; it is in requirements/apt.txt)", file=sys.stderr)
        return 3
    folder = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    results: dict[str, list[dict[str, float]]] = {"bare": [], "hooks": []}
    with scratch_database() as url, redis_namespace() as namespace, \
            running_sim(SIM_PORT, "--served-model-name", MODEL, "--ttft-ms", "0", "--itl-ms", "0", "--output-tokens",
                        "8", "--max-num-seqs", "1024", env={"VLLM_API_KEY": VLLM_KEY}):
        hooks_config = render_config(folder / "generated", SIM_PORT)
        hooks = Gateway(HOOKS_PORT, hooks_config, folder / "hooks", url, namespace, 5.0)
        bare = Gateway(BARE_PORT, bare_config(hooks_config), folder / "bare", url, namespace, 5.0)
        try:
            for gateway in (hooks, bare):
                gateway.spawn()
            for gateway in (hooks, bare):
                gateway.wait_healthy()
            key = create_key(url, "--alias", "bench", "--rpm", "10000000", "--tpm", "1000000000", "--max-parallel",
                             "1000")["key"]
            for gateway, api_key in ((hooks, key), (bare, MASTER_KEY)):  # warm up
                wrk(gateway.url, api_key, 1)
            time.sleep(1)
            rows_before = int(scalar(url, "SELECT count(*) FROM confgen_usage WHERE key_alias = 'bench'"))
            for i in range(args.rounds):
                order = [("hooks", hooks, key), ("bare", bare, MASTER_KEY)]
                for name, gateway, api_key in order if i % 2 == 0 else reversed(order):
                    result = measure(gateway, api_key, args.seconds, args.sequential)
                    results[name].append(result)
                    print(f"round {i + 1} {name}: {result}", flush=True)
            time.sleep(1)
            ledger_rows = int(scalar(url, "SELECT count(*) FROM confgen_usage WHERE key_alias = 'bench'")) - rows_before
        finally:
            for gateway in (hooks, bare):
                gateway.stop()
        rate, stored = insert_rate(url, args.rows, folder)
    shutil.rmtree(folder, ignore_errors=True)
    write_section(report(results, args, ledger_rows, rate, stored))
    print(report(results, args, ledger_rows, rate, stored))
    return 0


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, ledger_rows: int, rate: float,
           stored: int) -> str:
    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    def spread(name: str, field: str) -> str:
        values = [r[field] for r in results[name]]
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"

    cost = 1 - med("hooks", "rps") / med("bare", "rps")
    cpu_cost = 1 - med("bare", "cpu_ms") / med("hooks", "cpu_ms")
    added_seq = med("hooks", "seq_ms") - med("bare", "seq_ms")
    sent = int(sum(r["requests"] for r in results["hooks"]) + args.sequential * args.rounds)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0))
    labels = (("bare LiteLLM (master key, no hooks)", "bare"), ("with our hooks (API key, limits, ledger)", "hooks"))
    rows = "\n".join(
        f"| {label} | {spread(name, 'rps')} | {med(name, 'p50'):.1f} | {med(name, 'p99'):.1f} | "
        f"{med(name, 'seq_ms'):.1f} | {med(name, 'cpu_ms'):.2f} |" for label, name in labels)
    return f"""{SECTION}

Date: {now}. Machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}.
Command: `.venv/bin/python scripts/bench_gateway_hooks.py --rounds {args.rounds} --seconds {args.seconds} \
--rows {args.rows}`.

Method: one simulator (no latency, 8 tokens) behind two LiteLLM 1.108.7 gateways from the same rendered
template: with our hooks (custom_auth: API key from PostgreSQL via the 5 s cache, rpm/tpm/parallel
limits through one Redis script per request and one at the end; the ledger callback writing one row per
request) and bare (no custom_auth, no ledger callback: LiteLLM's master-key check). Alternating rounds
of `wrk -t1 -c16 -d{args.seconds}s` (median of {args.rounds} rounds, min-max) and {args.sequential} sequential
requests (median). Everything shares the same cores, load from other work on the machine included, so
the gateway process's own CPU time per request (all its threads, from /proc; PostgreSQL's and Redis's
work is not in it) is reported too: it moves much less with the machine's load than requests/s do.

| gateway | requests/s | p50 ms (c=16) | p99 ms (c=16) | sequential ms (c=1) | gateway CPU ms per request |
|---|---|---|---|---|---|
{rows}

Throughput cost of the hooks: **{cost * 100:.1f}%** by requests/s, **{cpu_cost * 100:.1f}%** by the gateway's CPU
per request (goal: under 10%). Added latency at concurrency 1: {added_seq:+.2f} ms per request. Ledger rows
written for the hooks gateway during the rounds: {ledger_rows} for about {sent} requests sent (wrk's count
excludes the requests in flight when it stops).

Ledger writer alone: {args.rows:,} rows in batches of up to 1,000 (one `INSERT ... SELECT FROM unnest(...) ON
CONFLICT (request_id) DO NOTHING` per batch) into PostgreSQL 15 on this machine: **{rate:,.0f} rows/s**
sustained (goal: at least 5,000); {stored:,} rows stored.
"""


if __name__ == "__main__":
    sys.exit(main())
