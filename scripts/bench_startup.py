#!/usr/bin/env python3
"""Benchmark: cold start (install excluded) to ready of the local stack, and first-request latency.

Method: `./runMe.sh install` first (not timed); then, per round, `./runMe.sh` with a fresh run folder
(generated configs, caches and scratch space all new) is timed from exec to exit (it exits once vLLM
and the gateway are healthy); then one chat completion through the gateway (our path) and one
straight to vLLM (the baseline) are timed, then a further 10 of each for steady state; then
`./runMe.sh stop`. Loopback only, bounded rounds. Results go to docs/benchmarks.md.

Usage: .venv/bin/python scripts/bench_startup.py [--rounds 3] [--port 14100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import benchdoc
import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-cpu"
VLLM_PORT = 18100
SECTION = "## Local stack: cold start to ready, first request"


def _chat(url: str, key: str) -> float:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
    start = time.perf_counter()
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=120)
    elapsed = time.perf_counter() - start
    resp.raise_for_status()
    return elapsed * 1000


def one_round(port: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-run-") as run_dir:
        env = {**os.environ, "CONFGEN_RUN_DIR": run_dir, "LITELLM_PORT": str(port), "VLLM_PORT": str(VLLM_PORT),
               "MODEL": MODEL}
        start = time.perf_counter()
        up = subprocess.run([str(ROOT / "runMe.sh")], env=env, capture_output=True, text=True, timeout=900,
                            check=False)
        ready = time.perf_counter() - start
        try:
            if up.returncode:
                raise SystemExit(f"./runMe.sh failed:\n{up.stdout}\n{up.stderr}")
            gw_key = (ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
            vllm_key = (ROOT / "secrets" / "VLLM_API_KEY").read_text().strip()
            gateway, vllm = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{VLLM_PORT}"
            first_gw = _chat(gateway, gw_key)
            first_vllm = _chat(vllm, vllm_key)
            steady_gw = statistics.median(_chat(gateway, gw_key) for _ in range(10))
            steady_vllm = statistics.median(_chat(vllm, vllm_key) for _ in range(10))
        finally:
            subprocess.run([str(ROOT / "runMe.sh"), "stop"], env=env, capture_output=True, timeout=120, check=False)
    return {"ready_s": ready, "first_gw_ms": first_gw, "first_vllm_ms": first_vllm,
            "steady_gw_ms": steady_gw, "steady_vllm_ms": steady_vllm}


def write_report(rounds: list[dict[str, float]]) -> str:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    rows = "\n".join(
        f"| {i + 1} | {r['ready_s']:.1f} | {r['first_gw_ms']:.0f} | {r['first_vllm_ms']:.0f} | "
        f"{r['steady_gw_ms']:.1f} | {r['steady_vllm_ms']:.1f} |" for i, r in enumerate(rounds))
    overhead = med("steady_gw_ms") - med("steady_vllm_ms")
    text = f"""{SECTION}

Date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}. Machine: {benchdoc.machine()}.
Command: `.venv/bin/python scripts/bench_startup.py --rounds {len(rounds)}`.

Method: `./runMe.sh install` first (not timed). Each round starts `./runMe.sh` (MODEL={MODEL}) with a
fresh run folder and times it until it exits, which it does once vLLM (CPU build) and the LiteLLM
gateway (started at the same time) both answer their health checks and one request through the
gateway has been answered. Then one chat completion (16 tokens max) through the
gateway (our path) and one straight to vLLM (baseline) are timed, then 10 more of each (median),
then `./runMe.sh stop`.

| round | ready (s) | first via gateway (ms) | first direct (ms) | steady via gateway (ms) | steady direct (ms) |
|---|---|---|---|---|---|
{rows}

Median ready time: **{med("ready_s"):.1f} s** (target: under 60 s). Median steady-state request:
{med("steady_gw_ms"):.1f} ms through the gateway vs {med("steady_vllm_ms"):.1f} ms direct, ratio
{med("steady_gw_ms") / med("steady_vllm_ms"):.2f} (gateway overhead {overhead:.1f} ms per request).
"""
    benchdoc.write_section(SECTION, text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--port", type=int, default=14100, help="gateway port for the benchmark")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "runMe.sh"), "install"], check=True, capture_output=True)
    rounds = []
    for i in range(args.rounds):
        result = one_round(args.port)
        print(f"round {i + 1}: ready {result['ready_s']:.1f} s, first request {result['first_gw_ms']:.0f} ms",
              flush=True)
        rounds.append(result)
    print(write_report(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
