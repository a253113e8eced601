#!/usr/bin/env python3
"""Benchmark: what each gateway path costs, measured in one run in front of one vLLM-API simulator.

Paths: (1) direct to the simulator; (2) the nginx hop (`confgen nginx --public-paths`: HTTPS, straight to
the model); (3) bare LiteLLM, a minimal config (model + master key, default settings); (4) our stack: the
config `confgen render` writes, started the way `./runMe.sh` starts it (`confgen.runtime.stack`), with our
custom_auth (an API key from PostgreSQL with rate limits in Redis), the usage ledger and Prometheus
metrics; bare LiteLLM and our stack also with 2 workers. Workloads, interleaved (each measurement runs on
every path in a shuffled order before the next) and repeated for `--rounds`: wrk at 1 and at `--connections` connections
(non-streaming chat, 1 token); streams one after another (time to first token); `--streams` concurrent
streams of 128 tokens paced at 10 ms (relay capacity). The gateway's CPU comes from /proc (utime + stime of
its process tree), its memory from sampling the tree's RSS. Results: a section of docs/benchmarks.md and
docs/bench-gateway.png.

Usage: .venv/bin/python scripts/bench_gateway.py [--rounds 3] [--seconds 5]   (needs wrk, nginx, PostgreSQL, Redis)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from gwbench import load, report  # noqa: E402 - after the path is set
from gwbench.paths import BENCH_DB, Bench, Cores, Ports, Route, running_paths  # noqa: E402
from gwbench.procs import memory_sampler  # noqa: E402

NON_STREAMING = {**load.CHAT, "max_tokens": 1}
STREAM_TOKENS, ITL_MS = 128, 10
# Two streams' length: the first starts are spread over it, so the streams are out of step before the window.
RELAY_WARMUP_S = 2 * STREAM_TOKENS * ITL_MS / 1000


def measure_round(bench: Bench, res: report.Results, args: argparse.Namespace, rnd: int) -> None:
    shuffle = random.Random(rnd).shuffle  # noqa: S311 - an order, not a secret: the same each run

    def cpu_of(route: Route) -> Callable[[], float]:
        return route.server.cpu if route.server else lambda: 0.0

    steps: list[tuple[str, bool, Callable[[Route], None]]] = [
        ("c1", True, lambda r: res.add(r.name, "c1", load.wrk(r.target, NON_STREAMING, 1, args.seconds, cpu_of(r)))),
        ("c32", False, lambda r: res.add(r.name, "c32", load.wrk(r.target, NON_STREAMING, args.connections,
                                                                  args.seconds, cpu_of(r)))),
        ("ttft", True, lambda r: res.ttft.setdefault(r.name, []).append(load.ttft(r.target, args.ttft_requests))),
        ("relay", False, lambda r: res.add(r.name, "relay", load.relay(
            r.target, args.streams, max_tokens=STREAM_TOKENS, warmup_s=RELAY_WARMUP_S, seconds=args.seconds,
            cpu=cpu_of(r)))),
    ]
    for measure, latency_only, step in steps:
        routes = [r for r in bench.routes if r.latency or not latency_only]
        shuffle(routes)
        for route in routes:
            step(route)
            time.sleep(0.3)  # let the previous path's after-request work finish
        print(f"round {rnd}: {measure}: " + ", ".join(_brief(res, r.name, measure) for r in bench.routes
                                                      if r.latency or not latency_only), flush=True)


def _brief(res: report.Results, route: str, measure: str) -> str:
    if measure == "ttft":
        return f"{route} {res.ttft_round_medians(route)[-1]:.1f} ms"
    if measure == "relay":
        run = res.runs[route]["relay"][-1]
        return f"{route} {run['tokens_per_s']:,.0f} tok/s"
    run = res.runs[route][measure][-1]
    cpu = f", {run['cpu_ms']:.1f} ms CPU/req" if run.get("cpu_ms", 0) > 0 else ""
    return f"{route} {run['rps']:,.0f}/s p50 {run['p50_ms']:.1f} ms{cpu}"


def warm_up(bench: Bench, args: argparse.Namespace) -> None:
    """First requests import and build caches in LiteLLM: not measured."""
    for route in bench.routes:
        load.wrk(route.target, NON_STREAMING, 8, 1, lambda: 0.0)
        load.ttft(route.target, 3)
        load.relay(route.target, min(args.streams, 16), max_tokens=8, warmup_s=0.5, seconds=0.5, cpu=lambda: 0.0)


def versions() -> str:
    def tool(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (done.stdout + done.stderr).strip().splitlines()[0]

    pkgs = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("litellm", "uvicorn", "httptools", "httpx"))
    return f"Python {platform.python_version()}, {pkgs}, {tool(['nginx', '-v']).split(': ')[-1]}, " \
           f"{tool(['wrk', '-v']).split(' Copyright')[0]}"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"


def command(args: argparse.Namespace) -> str:
    flags = f"--rounds {args.rounds} --seconds {args.seconds:g}"
    if args.no_pin:
        flags += " --no-pin"
    if args.ports_from:
        flags += f" --ports-from {args.ports_from}"
    return f".venv/bin/python scripts/bench_gateway.py {flags}"


def section(res: report.Results, args: argparse.Namespace, cores: Cores, notes: dict[str, str]) -> str:
    pinning = ("not pinned (--no-pin)" if cores.gateway is None else
               f"pinned with sched_setaffinity (what `taskset` does): one-worker gateways and nginx on core(s) "
               f"{_cores(cores.gateway)}, the 2-worker gateways on {_cores(cores.gateway2)}, wrk, the stream "
               f"client and the simulator on {_cores(cores.clients)}")
    text = f"""Date: {notes['date']}. Machine: {machine()}; load average {notes['load_before']} before the run,
{notes['load_after']} after it. Versions: {versions()}.
Command: `{command(args)}` (after `./runMe.sh install`; needs wrk and nginx from `requirements/apt.txt`,
and PostgreSQL and Redis as in `vars.env`). Plot: `docs/bench-gateway.png`. Wall time: {notes['wall']}.

Method: one simulator (`python -m confgen.sim`, TTFT 0, 10 ms between tokens) behind every path:
**direct**; **nginx hop**: `confgen nginx --public-paths` (HTTPS with keep-alive, straight to the model:
the hop alone); **bare LiteLLM**: a minimal config (the model and the master key, default settings, one
worker: a default LiteLLM deployment; run from our venv, so it also gets httptools and opentelemetry-sdk,
which make it cheaper than a plain `pip install litellm[proxy]`), and the same with `--num_workers 2`
(the reference for our 2-worker scaling); **our stack**: `confgen render`'s config,
started with `./runMe.sh`'s argv and environment (`confgen.runtime.stack.gateway_launch`), called with an
API key from PostgreSQL that has rpm, tpm and parallel limits (counted in Redis on every request), with
the usage ledger and its Prometheus metrics on, and its relay lane on (the default: vLLM-native requests
relayed as bytes, confgen/gateway/lane.py); **our stack, lane off**: the same with `RELAY_LANE=off`, every
request through LiteLLM (what "our stack" was before the lane); {notes['ledger']}. `MAX_PARALLEL_REQUESTS=1024` for the
benchmark (the default 16 would turn the concurrent runs into 429s). Throughput and latency: `wrk -t1`,
non-streaming chat with `max_tokens: 1`, {args.seconds:g} s per run, at 1 and at {args.connections}
connections. TTFT: {args.ttft_requests} streams one after another (4 tokens each) from an asyncio httpx
client. Relay capacity: {args.streams} concurrent streams of {STREAM_TOKENS} tokens, restarted as they
end, their first starts spread evenly over a {RELAY_WARMUP_S:g} s warm-up (so they do not start and end in
step), then {args.seconds:g} s measured. Gateway CPU: utime + stime (+ cutime + cstime: ended workers) of the
gateway's process tree (/proc) over the run, per request or per streamed token chunk (the chunk figure includes each
stream's share of its request's cost). Peak RSS: the tree's resident memory sampled every 0.25 s. Each
measurement runs on every path in a shuffled order before the next one; {args.rounds} round(s); medians,
(min-max) over rounds; "added" = median over rounds of (path - direct) in the same round. Cores:
{pinning}. Warm-up requests first, not counted. Errors (non-2xx or socket errors): {notes['errors']}.

Load generators: {client_note(res, args)}
"""
    paragraphs = [textwrap.fill(" ".join(p.split()), 108, break_on_hyphens=False) for p in text.split("\n\n")]
    return "\n\n".join([report.SECTION, *paragraphs, report.tables(res, args.connections, args.streams)]) + "\n"


def client_note(res: report.Results, args: argparse.Namespace) -> str:
    """How far the load generators were from being the limit, from this run's own figures."""
    litellm = [r for r in res.routes if r not in ("direct", "nginx hop", report.OURS, report.OURS2)]
    wrk_direct, wrk_gw = res.med("direct", "c32", "rps"), max(res.med(r, "c32", "rps") for r in litellm)
    direct, share = res.med("direct", "relay", "tokens_per_s"), res.med("direct", "relay", "client_cpu_share")
    stream_gw = max(res.med(r, "relay", "tokens_per_s") for r in litellm)
    lane = res.med(report.OURS, "relay", "tokens_per_s")
    return (f"wrk made {wrk_direct:,.0f} requests/s direct, {wrk_direct / wrk_gw:,.0f}x the most any path through "
            f"LiteLLM served; the stream client took {direct:,.0f} tokens/s direct (the simulator's pace allows "
            f"{args.streams * 1000 / ITL_MS:,.0f}) using {share:.0%} of a core, {direct / stream_gw:.1f}x the most "
            "any path through LiteLLM delivered: those figures are the gateways' own. The relay lane's relay "
            f"figure is {lane / direct:.0%} of direct, and the nginx hop's close to direct: the client and the "
            "simulator may bound them.")


def _cores(cpus: set[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus or ()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run and per relay window")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for the throughput run")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streams for the relay run")
    parser.add_argument("--ttft-requests", type=int, default=30, help="sequential streams per TTFT run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin gateways and clients to cores")
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds for the gateways to start")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gateways' configs and logs (path printed)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where benchmarks.md and the PNG go")
    parser.add_argument("--ports-from", type=int, default=0, metavar="PORT",
                        help="use 8 ports from PORT on (default: 15200 and 14200-14204, 14240-14241)")
    parser.add_argument("--database", default=BENCH_DB, help="the scratch database (dropped and made again)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 30 or not 32 <= args.connections <= 256 or not 32 <= args.streams <= 256 \
            or not 5 <= args.ttft_requests <= 200:
        parser.error("--seconds 1..30, --connections 32..256, --streams 32..256, --ttft-requests 5..200")
    for exe in ("wrk", "nginx"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            print(f"error: {exe} is not installed (apt-get install -y {exe}; see requirements/apt.txt)",
                  file=sys.stderr)
            return 3
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so every process started here is stopped and the database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    notes = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "load_before": _load()}
    cores = Cores.plan(not args.no_pin)
    ports = Ports.from_base(args.ports_from) if args.ports_from else Ports()
    with running_paths(ports, cores, args.start_timeout, keep=args.keep_logs, database=args.database) as bench:
        names = [r.name for r in bench.routes]
        res = report.Results(routes=names, latency_routes=[r.name for r in bench.routes if r.latency])
        servers = [r.server for r in bench.routes if r.server]
        with memory_sampler(servers):
            warm_up(bench, args)
            for rnd in range(1, args.rounds + 1):
                measure_round(bench, res, args, rnd)
        res.peak_rss = {r.name: r.server.peak_rss for r in bench.routes if r.server}
        time.sleep(1.0)  # the ledger writer batches every 0.2 s
        rows = bench.db.ledger_rows()
    notes["ledger"] = f"the ledger got {rows:,} rows in this run" if rows else "**the ledger got no rows**"
    errors = res.errors()
    notes["errors"] = ", ".join(f"{k}: {v:,.0f}" for k, v in errors.items()) if errors else "none"
    notes["load_after"] = _load()
    notes["wall"] = f"{time.monotonic() - started:.0f} s"
    text = section(res, args, cores, notes)
    args.docs.mkdir(parents=True, exist_ok=True)
    report.write_section(args.docs / "benchmarks.md", text)  # the results first: the plot is optional
    print(text)
    try:
        report.plot(res, args.docs / "bench-gateway.png", args.connections, args.streams,
                    f"Gateway paths in front of one simulator ({notes['date']}, {machine()})")
    except ImportError as exc:
        print(f"note: no plot ({exc}); the table is in {args.docs / 'benchmarks.md'}. For the plot: "
              ".venv/bin/pip install matplotlib", file=sys.stderr)
    return 1 if errors else 0


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
