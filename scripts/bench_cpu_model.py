#!/usr/bin/env python3
"""Benchmark: cold start of the default CPU model (SmolLM2-135M-Instruct) on the CPU build of vLLM.

Method: `./runMe.sh install` first (not timed: the vLLM venv and the weights in .local/models/). Then, per
round, `./runMe.sh` (MODEL=smollm2-135m) with a fresh run folder (configs, caches, scratch all new) and a
scratch database; timed: vLLM start to ready (from runMe.sh's "starting vLLM" line to the first 200 of
vLLM's /health, polled every 0.25 s) and runMe.sh start to exit (it exits once vLLM and the gateway are
healthy and one request went through). Then one greedy question through the gateway, timed, its answer
kept; then `./runMe.sh stop`. Loopback only, bounded rounds. Results go to docs/benchmarks.md.

Usage: .venv/bin/python scripts/bench_cpu_model.py [--rounds 3] [--port 16050] [--db-prefix bench_]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import benchdoc
import httpx
import psycopg
from psycopg import sql

from confgen.catalog import select
from confgen.load import Project

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
SECTION = "## CPU model (SmolLM2-135M): cold start to ready"
QUESTION = "What is the capital of France?"
PG = "postgresql://postgres@127.0.0.1:5432"
DEADLINE_S = 600.0


def _vllm_ready_at(url: str, started: threading.Event, out: list[float]) -> None:
    """Once vLLM was started, poll its /health until 200 (bounded); the time it answered."""
    if not started.wait(DEADLINE_S):
        return
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                out.append(time.perf_counter())
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)


def _ask(gateway: str, key: str) -> tuple[float, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 32, "temperature": 0}
    start = time.perf_counter()
    resp = httpx.post(f"{gateway}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=120)
    elapsed = time.perf_counter() - start
    resp.raise_for_status()
    return elapsed * 1000, resp.json()["choices"][0]["message"]["content"]


def one_round(port: int, database_url: str, vllm_url: str) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="bench-cpu-run-") as run_dir:
        env = {**os.environ, "CONFGEN_RUN_DIR": run_dir, "LITELLM_PORT": str(port), "MODEL": MODEL,
               "DATABASE_URL": database_url, "CONFGEN_REDIS_PREFIX": f"{database_url.rsplit('/', 1)[1]}:",
               "PYTHONUNBUFFERED": "1"}  # runMe.sh's lines as they are printed
        started, ready_at, vllm_start = threading.Event(), list[float](), [0.0]
        poller = threading.Thread(target=_vllm_ready_at, args=(vllm_url, started, ready_at), daemon=True)
        poller.start()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        up = subprocess.Popen([str(ROOT / "runMe.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        lines = []
        try:
            assert up.stdout is not None  # noqa: S101 - stdout=PIPE
            for line in up.stdout:  # ends when runMe.sh exits
                lines.append(line)
                if line.startswith("starting vLLM"):
                    vllm_start[0] = time.perf_counter()
                    started.set()
            if up.wait(DEADLINE_S):
                raise SystemExit("./runMe.sh failed:\n" + "".join(lines))
            total = time.perf_counter() - t0
            poller.join(DEADLINE_S)
            key = (ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
            ask_ms, answer = _ask(f"http://127.0.0.1:{port}", key)
        finally:
            started.set()
            subprocess.run([str(ROOT / "runMe.sh"), "stop"], env=env, capture_output=True, timeout=120, check=False)
    if not ready_at:
        raise SystemExit(f"vLLM's /health at {vllm_url} never answered 200")
    return {"vllm_s": ready_at[0] - vllm_start[0], "total_s": total, "ask_ms": ask_ms, "answer": answer.strip(),
            "load": load}


def write_report(rounds: list[dict[str, float | str]]) -> str:
    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in rounds)

    rows = "\n".join(f"| {i + 1} | {float(r['load']):.1f} | {float(r['vllm_s']):.1f} | {float(r['total_s']):.1f} | "
                     f"{float(r['ask_ms']):.0f} | {r['answer']} |" for i, r in enumerate(rounds))
    text = f"""{SECTION}

Date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}. Machine: {benchdoc.machine()}.
Command: `.venv/bin/python scripts/bench_cpu_model.py --rounds {len(rounds)}`.

Method: `./runMe.sh install` first (not timed: the vLLM venv, and the weights that
scripts/build_smollm2.py builds once into .local/models/). Each round starts `./runMe.sh`
(MODEL={MODEL}, vLLM CPU build, `--max-model-len 8192 --dtype bfloat16 --enforce-eager`) with a fresh
run folder and its own database. "vLLM ready" runs from runMe.sh's "starting vLLM" line to the first 200 of
vLLM's /health (polled every 0.25 s); "stack ready" from the start of runMe.sh to its exit, once vLLM
and the gateway are healthy and one request went through. Then "{QUESTION}" (greedy, 32
tokens max) through the gateway, then `./runMe.sh stop`. Other work may share the 2 cores: "load" is the machine's
1-minute load average when the round started.

| round | load | vLLM ready (s) | stack ready (s) | question via gateway (ms) | answer |
|---|---|---|---|---|---|
{rows}

Median vLLM start to ready: **{med("vllm_s"):.1f} s** (goal: at most 60 s on 2 cores). Median stack ready:
{med("total_s"):.1f} s; median answer {med("ask_ms"):.0f} ms.
"""
    benchdoc.write_section(SECTION, text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--port", type=int, default=16050, help="gateway port for the benchmark")
    parser.add_argument("--db-prefix", default="bench_", help="prefix of the scratch database's name")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "runMe.sh"), "install"], check=True, capture_output=True)
    model = select(Project(ROOT), [MODEL], environ={}).models[0]
    vllm_url = f"http://127.0.0.1:{model.port}"
    rounds = []
    for i in range(args.rounds):
        name = f"{args.db_prefix}{secrets.token_hex(4)}"
        try:
            result = one_round(args.port, f"{PG}/{name}", vllm_url)
        finally:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        print(f"round {i + 1}: vLLM ready {float(result['vllm_s']):.1f} s, "
              f"stack ready {float(result['total_s']):.1f} s, answer {result['answer']!r}", flush=True)
        rounds.append(result)
    print(write_report(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
