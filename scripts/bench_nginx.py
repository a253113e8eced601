#!/usr/bin/env python3
"""Benchmark: the latency the nginx HTTPS hop adds, against going direct, measured in one run.

Method: start the local stack (`./runMe.sh`, MODEL=tiny-cpu, own ports and run folder), make
certificates with scripts/certs.sh, render two nginx configs with `confgen nginx` (the default one, whose
model path goes through the LiteLLM gateway, and a --public-paths one, whose model path goes straight to
vLLM) and run Debian's nginx on them. Then, per round, in a shuffled order, one request on each of
four paths: vLLM direct, vLLM through nginx (public path), LiteLLM direct (/v1/... and the
/openai/deployments/<model>/... route the model path maps to), LiteLLM through nginx (model path);
each as a chat completion (1 token, whole request) and as a stream (time to the first token).
Clients keep their connections (TLS is negotiated once); a fresh-connection row measures the TLS
handshake too. The added latency is the median of the per-round differences (via nginx - direct).
Loopback only, bounded rounds. Results go to docs/benchmarks.md (this script's section only).

Usage: .venv/bin/python scripts/bench_nginx.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import benchdoc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confgen.catalog import select  # noqa: E402 - after the path is set
from confgen.load import Project  # noqa: E402
from confgen.render import nginx  # noqa: E402
from tests.nginxproc import cleanup, make_certs, nginx_test, prefix_folder, running_nginx  # noqa: E402

MODEL = "tiny-cpu"
SECTION = "## nginx HTTPS hop: added latency"
LITELLM_PORT, VLLM_PORT = 14700, 18700
GATED, PUBLIC = 18443, 14710
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}


def _whole(client: httpx.Client, url: str, key: str) -> float:
    start = time.perf_counter()
    resp = client.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"})
    elapsed = (time.perf_counter() - start) * 1000
    resp.raise_for_status()
    return elapsed


def _first_token(client: httpx.Client, url: str, key: str) -> float:
    start = time.perf_counter()
    body = {**BODY, "max_tokens": 8, "stream": True}
    with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                return (time.perf_counter() - start) * 1000
    raise RuntimeError(f"no token streamed from {url}")


def _fresh(ctx: ssl.SSLContext, url: str, key: str) -> float:
    with httpx.Client(verify=ctx, timeout=60) as client:  # a new TCP + TLS connection each time
        return _whole(client, url, key)


def measure(rounds: int, ca: Path) -> dict[str, list[float]]:
    vllm_key = (ROOT / "secrets" / "VLLM_API_KEY").read_text().strip()
    key = (ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(ca))
    vllm, litellm = f"http://127.0.0.1:{VLLM_PORT}/v1/chat/completions", f"http://127.0.0.1:{LITELLM_PORT}/v1/chat/completions"
    public = f"https://127.0.0.1:{PUBLIC}/{MODEL}/v1/chat/completions"
    gated = f"https://127.0.0.1:{GATED}/{MODEL}/v1/chat/completions"
    deployment = f"http://127.0.0.1:{LITELLM_PORT}/openai/deployments/{MODEL}/chat/completions"
    plain, tls = httpx.Client(timeout=60), httpx.Client(verify=ctx, timeout=60)
    probes: dict[str, Callable[[], float]] = {
        "vllm direct": lambda: _whole(plain, vllm, vllm_key),
        "vllm via nginx": lambda: _whole(tls, public, "-"),
        "litellm direct": lambda: _whole(plain, litellm, key),
        "litellm via nginx": lambda: _whole(tls, gated, key),
        "ttft vllm direct": lambda: _first_token(plain, vllm, vllm_key),
        "ttft vllm via nginx": lambda: _first_token(tls, public, "-"),
        "ttft litellm direct": lambda: _first_token(plain, litellm, key),
        "ttft litellm via nginx": lambda: _first_token(tls, gated, key),
        "litellm deployment route direct": lambda: _whole(plain, deployment, key),
        "ttft litellm deployment route direct": lambda: _first_token(plain, deployment, key),
        "vllm via nginx, new TLS connection": lambda: _fresh(ctx, public, "-"),
    }
    names = list(probes)
    for probe in probes.values():  # warm up connections and caches, not counted
        probe()
    results: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(6).shuffle  # noqa: S311 - an order, not a secret: the same each run
    for _ in range(rounds):
        order = list(names)
        shuffle(order)  # no path always follows the same one (LiteLLM's after-request work slows the next)
        for name in order:
            results[name].append(probes[name]())
    plain.close()
    tls.close()
    return results


def machine() -> str:
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip()
    return f"{benchdoc.machine()}, {nginx_version.removeprefix('nginx version: ')}"


def write_report(results: dict[str, list[float]], rounds: int) -> str:
    def med(name: str) -> float:
        return statistics.median(results[name])

    def p90(name: str) -> float:
        return statistics.quantiles(results[name], n=10)[-1]

    def added(via: str, direct: str) -> float:
        return statistics.median(v - d for v, d in zip(results[via], results[direct], strict=True))

    rows = []
    for label, via, direct in (
        ("chat, 1 token: vLLM (public path)", "vllm via nginx", "vllm direct"),
        ("chat, 1 token: LiteLLM (model path)", "litellm via nginx", "litellm direct"),
        ("stream, first token: vLLM (public path)", "ttft vllm via nginx", "ttft vllm direct"),
        ("stream, first token: LiteLLM (model path)", "ttft litellm via nginx", "ttft litellm direct"),
        ("chat, 1 token: LiteLLM (model path) vs its route direct", "litellm via nginx",
         "litellm deployment route direct"),
        ("stream, first token: LiteLLM (model path) vs its route direct", "ttft litellm via nginx",
         "ttft litellm deployment route direct"),
        ("chat, new TLS connection each: vLLM", "vllm via nginx, new TLS connection", "vllm direct"),
    ):
        rows.append(f"| {label} | {med(direct):.1f} / {p90(direct):.1f} | {med(via):.1f} / {p90(via):.1f} | "
                    f"{added(via, direct):+.2f} | {med(via) / med(direct):.3f} |")
    table = "\n".join(rows)
    text = f"""{SECTION}

Date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}. Machine: {machine()}.
Command: `.venv/bin/python scripts/bench_nginx.py --rounds {rounds}`.

Method: the local stack (MODEL={MODEL}, CPU vLLM + LiteLLM) and two nginx servers from `confgen nginx`
(default: the model path goes through the gateway; `--public-paths`: straight to vLLM), all on this
machine, loopback only. Each of {rounds} rounds makes one request on every path, in a shuffled order;
LiteLLM's model path is compared with both its /v1/ route and the deployment route it maps to, which
tells nginx's share from the route's. Clients keep their connections (one TLS handshake), except
the last row, which opens a new TCP + TLS connection per request. Direct is plain HTTP; via nginx is
HTTPS, so "added" includes TLS on both ends (the Python client's share too), not only nginx's
proxying. Added = median of the per-round differences (via nginx - direct); ratio = median via nginx /
median direct.

| path | direct median / p90 (ms) | via nginx median / p90 (ms) | added (ms) | ratio |
|---|---|---|---|---|
{table}
"""
    benchdoc.write_section(SECTION, text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, choices=range(5, 501), metavar="5..500")
    args = parser.parse_args()
    work = prefix_folder("bench-nginx-")
    env = {**os.environ, "CONFGEN_RUN_DIR": str(work / "run"), "LITELLM_PORT": str(LITELLM_PORT),
           "VLLM_PORT": str(VLLM_PORT), "MODEL": MODEL}
    try:
        up = subprocess.run([str(ROOT / "runMe.sh")], env=env, capture_output=True, text=True, timeout=900,
                            check=False)
        if up.returncode:
            raise SystemExit(f"./runMe.sh failed:\n{up.stdout}\n{up.stderr}")
        certs = make_certs(work / "certs")
        selection = select(Project(ROOT), [MODEL], env)
        vllm_key = (ROOT / "secrets" / "VLLM_API_KEY").read_text().strip()
        gated, public = work / "gated", work / "public"
        nginx.write(selection, nginx.NginxOptions(certs=certs, https_port=GATED, http_port=GATED + 1), gated)
        nginx.write(selection, nginx.NginxOptions(certs=certs, https_port=PUBLIC, http_port=PUBLIC + 1,
                                                  public_paths=True), public, vllm_key)
        for out in (gated, public):
            nginx_test(out)
        with running_nginx(gated, GATED), running_nginx(public, PUBLIC):
            results = measure(args.rounds, certs / "ca.crt")
        print(write_report(results, args.rounds))
    finally:
        subprocess.run([str(ROOT / "runMe.sh"), "stop"], env=env, capture_output=True, timeout=120, check=False)
        cleanup(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
