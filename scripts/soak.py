#!/usr/bin/env python3
"""Soak benchmark (not a CI test): mixed streamed and plain load through the gateway for a long while, with a
replica killed and restarted every few minutes and one gateway restart; then what the guarantee of
docs/reliability.md ("every accepted request gets an answer and exactly one ledger row") looked like.

Method: the real LiteLLM gateway (one process, the config `confgen render` makes from a deployments.yml with
two replicas of `big` on two loopback "hosts" and `gateway.instances: 2`, so LiteLLM's router and our limits
use Redis), two simulator replicas (`python -m confgen.sim`: 20 ms to the first token, 32 tokens 10 ms apart),
a redis-server of its own, a scratch database `h16_soak_<random>` on the machine's PostgreSQL, one API key with
rpm/tpm/parallel limits (so every request is admitted and settled). An asyncio httpx client keeps
`--concurrency` requests in flight, every other one streamed, until the end. Every `--kill-every-s` one replica
(a, then b, ...) is SIGKILLed and restarted `--down-s` later; at half time the gateway gets SIGTERM (it drains)
and is started again. Every 10 s the gateway's RSS and open file descriptors are sampled (/proc). At the end:
requests sent, answered, failed (by kind), the key's ledger rows against the requests the gateway accepted,
and the failed requests per event (a failure counts for the last event that began before it started).
Loopback only, bounded by --minutes. Results: printed as JSON; docs/reliability.md quotes them.

Usage: .venv/bin/python scripts/soak.py [--minutes 20] [--kill-every-s 180] [--concurrency 6] [--out FILE]
Ports: gateway 17800, Redis 17810, replicas 17811/17812.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.keys_support import VLLM_KEY, Gateway, create_key, scratch_database  # noqa: E402 - path first
from tests.e2e.routing_support import Replica, render, sim_model, write_project  # noqa: E402
from tests.redisproc import PrivateRedis  # noqa: E402

GATEWAY_PORT, REDIS_PORT, REPLICA_PORTS = 17800, 17810, (17811, 17812)
SIM_FLAGS = ("--ttft-ms", "20", "--itl-ms", "10", "--output-tokens", "32")


@dataclass
class Outcome:
    started: float
    ended: float
    stream: bool
    status: int | str  # HTTP status, "broken stream", or the httpx exception's name


@dataclass
class LoadLoop:
    url: str
    key: str
    concurrency: int
    until: float
    outcomes: list[Outcome] = field(default_factory=list)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        thread.start()
        return thread

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as client:  # httpx's own keep-alive (5 s idle), as the SDKs
            await asyncio.gather(*(self._worker(client, w) for w in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, worker: int) -> None:
        n = worker
        while time.monotonic() < self.until:
            stream = n % 2 == 0
            n += 1
            started = time.monotonic()
            try:
                status = await self._one(client, stream)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
                await asyncio.sleep(0.2)  # a gateway being restarted: do not spin
            self.outcomes.append(Outcome(started, time.monotonic(), stream, status))

    async def _one(self, client: httpx.AsyncClient, stream: bool) -> int | str:
        body = {"model": "big", "messages": [{"role": "user", "content": "soak"}], "stream": stream}
        async with client.stream("POST", f"{self.url}/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {self.key}"}) as resp:
            text = (await resp.aread()).decode(errors="replace")
        if resp.status_code == 200 and stream:
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            if not events or events[-1] != "[DONE]" or any('"error"' in e[:12] for e in events):
                return "broken stream"
        return resp.status_code


def proc_figures(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def ledger(database_url: str, prefix: str) -> Counter[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM confgen_usage WHERE key_prefix = %s GROUP BY status",
                            (prefix,)).fetchall()
    return Counter({int(status): int(count) for status, count in rows})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the load runs")
    parser.add_argument("--kill-every-s", type=float, default=180.0, help="a replica is killed this often")
    parser.add_argument("--down-s", type=float, default=20.0, help="how long a killed replica stays down")
    parser.add_argument("--concurrency", type=int, default=6, help="requests in flight")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON figures here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    redis_server = PrivateRedis(REDIS_PORT, folder / "redis").start()
    replicas = [Replica("127.0.0.1", REPLICA_PORTS[0], "big", VLLM_KEY, *SIM_FLAGS),
                Replica("127.0.0.2", REPLICA_PORTS[1], "big", VLLM_KEY, *SIM_FLAGS)]
    with scratch_database(prefix="h16_soak_") as database_url:
        deployments = {
            "routing": {"retries": 2, "stream_idle_s": 5, "allowed_fails": 1, "cooldown_s": 3,
                        "health_interval_s": 2, "health_timeout_s": 2},
            "gateway": {"instances": 2, "redis_namespace": "soak"},
            "models": {"big": {"replicas": [{"api_base": r.api_base} for r in replicas]}},
        }
        project = write_project(folder / "project", deployments, {"big": sim_model(10, 17820)})
        config = render(project, ["big"], folder / "generated", {})
        gateway = Gateway(GATEWAY_PORT, config, folder / "gw", database_url, "soak:", redis_url=redis_server.url)
        try:
            for replica in replicas:
                replica.start()
            gateway.start(180)
            key = create_key(database_url, "--alias", "soak", "--rpm", "100000", "--tpm", "1000000000",
                             "--max-parallel", str(args.concurrency * 2))
            figures = soak(args, gateway, replicas, key, database_url)
        finally:
            gateway.stop()
            for replica in replicas:
                replica.stop()
            redis_server.kill()
    text = json.dumps(figures, indent=1, sort_keys=True)
    print(text)
    print(f"logs (gateway, Redis): {folder}", file=sys.stderr)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


def soak(args: argparse.Namespace, gateway: Gateway, replicas: list[Replica], key: dict[str, Any],
         database_url: str) -> dict[str, Any]:
    begin = time.monotonic()
    end = begin + args.minutes * 60
    load = LoadLoop(gateway.url, key["key"], args.concurrency, end)
    thread = load.start()
    events: list[tuple[float, str]] = []
    samples: list[dict[str, float]] = []
    restart_at = begin + args.minutes * 30
    next_kill, victim, restarted, down_since = begin + args.kill_every_s, 0, False, None
    lifetimes: list[list[tuple[int, int]]] = [[]]
    next_sample = begin
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            if gateway.process is not None and gateway.process.poll() is None:
                rss, fds = proc_figures(gateway.process.pid)
                lifetimes[-1].append((rss, fds))
                samples.append({"t_s": round(now - begin), "rss_mib": round(rss / 1024, 1), "fds": fds,
                                "requests": len(load.outcomes)})
            next_sample = now + 10
        if down_since is None and now >= next_kill:
            replicas[victim].kill()
            events.append((now, f"kill replica {'ab'[victim]}"))
            down_since = now
        elif down_since is not None and now >= down_since + args.down_s:
            replicas[victim].start()
            events.append((time.monotonic(), f"restart replica {'ab'[victim]}"))
            victim, down_since, next_kill = 1 - victim, None, now + args.kill_every_s
        if not restarted and now >= restart_at and down_since is None:
            events.append((now, "gateway SIGTERM + start"))
            gateway.stop()
            gateway.start(180)
            lifetimes.append([])
            restarted = True
        time.sleep(0.2)
    thread.join(120)
    if down_since is not None:
        replicas[victim].start()
    time.sleep(8)  # the last rows: the accounting grace (5 s) and the writer's batch
    return summarize(load.outcomes, events, begin, samples=samples, lifetimes=lifetimes,
                     rows=ledger(database_url, key["prefix"]), args=args)


def summarize(outcomes: list[Outcome], events: list[tuple[float, str]], begin: float, *,
              samples: list[dict[str, float]], lifetimes: list[list[tuple[int, int]]], rows: Counter[int],
              args: argparse.Namespace) -> dict[str, Any]:
    # A request the gateway never accepted: refused while it was restarting (no connection).
    not_accepted = [o for o in outcomes if o.status in ("ConnectError",)]
    accepted = [o for o in outcomes if o not in not_accepted]
    failed = [o for o in accepted if o.status != 200]
    per_event: dict[str, int] = Counter()
    for o in failed:
        before = [name for t, name in events if t <= o.started + 0.5]
        per_event[f"{before[-1]} (at {round(next(t for t, n in events if n == before[-1]) - begin)} s)"
                  if before else "no event"] += 1
    growth = []
    for life in lifetimes:
        if len(life) >= 4:
            warm = life[min(3, len(life) - 1)]  # after 30 s of load
            growth.append({"rss_mib_after_30s": round(warm[0] / 1024, 1), "rss_mib_end": round(life[-1][0] / 1024, 1),
                           "fds_after_30s": warm[1], "fds_end": life[-1][1], "fds_max": max(f for _, f in life)})
    return {
        "minutes": args.minutes, "concurrency": args.concurrency, "kill_every_s": args.kill_every_s,
        "down_s": args.down_s,
        "sent": len(outcomes), "not_accepted_gateway_restarting": len(not_accepted), "accepted": len(accepted),
        "answered_200": sum(o.status == 200 for o in accepted),
        "failed_by_kind": dict(Counter(str(o.status) for o in failed)),
        "failed_streams": sum(o.stream for o in failed), "failed_plain": sum(not o.stream for o in failed),
        "failed_per_event": dict(per_event),
        "ledger_rows": sum(rows.values()), "ledger_by_status": {str(k): v for k, v in sorted(rows.items())},
        "ledger_rows_minus_accepted": sum(rows.values()) - len(accepted),
        "ledger_non_200_minus_client_failures": sum(v for k, v in rows.items() if k != 200) - len(failed),
        "events": [f"{round(t - begin)} s: {name}" for t, name in events],
        "gateway_lifetimes": growth,
        "samples": samples,
    }


if __name__ == "__main__":
    sys.exit(main())
