#!/usr/bin/env python3
"""Benchmark of on-demand models (docs/on-demand.md): swap time by method, requests served during a swap, and
the gateway's CPU per request for a resident model with the lifecycle on and off, in one run.

Method. One on-demand controller (confgen/controller/, in this process, its real HTTP API) owns three
SIMULATED vLLMs (confgen.sim): `tiny-cpu` (pinned, always resident) and `od-a`, `od-b`, with the simulator's
sleep API (configured sleep and wake times, named below) and a configured start-up time; a budget that holds
the pinned model and one other, swap by vLLM sleep level 1. Two real LiteLLM gateways from the same rendered
template, with our hooks, an API key from PostgreSQL (a scratch database `h17b_bench_*`) and Redis limits:
"on" reads the controller (CONFGEN_ONDEMAND), "off" does not.
- Gateway CPU: alternating rounds of `wrk -t1 -c16` against `tiny-cpu` on each gateway; the gateway process's
  own CPU time per request (from /proc, all its threads). Goal: "on" within noise of "off" (at most +2 %).
- Swaps: each round asks the "on" gateway for the model that is not awake with --held concurrent requests while
  --load clients keep asking for the pinned model; the first round starts od-b cold (the simulator's start-up
  time), later rounds put one model to sleep and wake the other. Figures: the controller's swap time, the
  held requests' time to answer, the pinned model's requests answered during the swap, failures.
- Cold start of the CPU model (--cold-rounds, 0 to skip): the same controller code with the real vLLM CPU build
  serving tiny-cpu (stop/start is the CPU swap: no sleep mode on CPU): ensure-ready from stopped, then stop.

Usage: .venv/bin/python scripts/bench_ondemand.py [--rounds 4] [--seconds 5] [--swaps 4] [--cold-rounds 1]
Ports: 15610-15612 simulators, 15620 controller, 15630-15631 gateways, 15640 vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchdoc
import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_gateway_hooks import cpu_seconds, wrk  # noqa: E402 - scripts/ is on the path

from confgen.controller.api import app  # noqa: E402 - after the path is set
from confgen.controller.core import Controller  # noqa: E402
from confgen.controller.plan import Member, OnDemandPlan  # noqa: E402
from confgen.load import Project  # noqa: E402
from confgen.plan import Gpu, GpuProfile  # noqa: E402
from confgen.routing.schema import OnDemandModel  # noqa: E402
from confgen.runtime.install import vllm_python  # noqa: E402
from confgen.runtime.rundir import RunDir  # noqa: E402
from confgen.runtime.runner import ServerSpec, vllm_server  # noqa: E402
from tests.e2e.keys_support import (  # noqa: E402
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    redis_namespace,
    render_config,
    scalar,
    scratch_database,
)

SECTION = "## On-demand models: swap time, requests during a swap, gateway CPU with the lifecycle on and off"
SIMS = {MODEL: 15610, "od-a": 15611, "od-b": 15612}
CONTROLLER, ON_PORT, OFF_PORT, VLLM_PORT = 15620, 15630, 15631, 15640
TOKEN = "bench-ondemand-" + os.urandom(8).hex()
SIM_TIMES = {"startup": 3.0, "sleep": 0.5, "wake": 1.0}  # the simulator's configured times (s)


def sim_spec(name: str, folder: Path) -> ServerSpec:
    argv = [sys.executable, "-m", "confgen.sim", "--served-model-name", name, "--port", str(SIMS[name]),
            "--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "8", "--max-num-seqs", "1024"]
    if name != MODEL:
        argv += ["--enable-sleep-mode", "--startup-s", str(SIM_TIMES["startup"]), "--sleep-s",
                 str(SIM_TIMES["sleep"]), "--wake-s", str(SIM_TIMES["wake"])]
    return ServerSpec(f"sim-{name}", argv, {**os.environ, "VLLM_API_KEY": VLLM_KEY}, ROOT, folder / f"sim-{name}.log",
                      f"http://127.0.0.1:{SIMS[name]}")


def plan(names: dict[str, OnDemandModel], swap: str = "sleep-1") -> OnDemandPlan:
    """45 of 100 hundredths awake, 5 asleep each: the pinned model and one other fit."""
    gpu = Gpu("bench-100", GpuProfile(description="bench", memory_gb=100, ceiling=1.0, swap=swap), "bench")
    members = {n: Member(n, n, "gpu", 45, 5 if swap != "stop" else 0, 45.0, 5.0 if swap != "stop" else 0.0, s)
               for n, s in names.items()}
    return OnDemandPlan(gpu, swap, "benchmark", 30.0, CONTROLLER, 100, members)


@contextmanager
def serving(controller: Controller) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app(controller, TOKEN), host="127.0.0.1", port=CONTROLLER,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > end:
                raise RuntimeError("the controller's API did not start in 30 s")
            time.sleep(0.1)
        yield
    finally:
        server.should_exit = True
        thread.join(60)


@dataclass
class OnGateway(Gateway):
    view: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.view is not None:
            env["CONFGEN_ONDEMAND"] = str(self.view)
        return env


def ask(url: str, key: str, model: str, timeout: float = 120) -> tuple[int, float, float]:
    """(status, started, ended) of one chat completion (perf_counter times)."""
    started = time.perf_counter()
    try:
        status = httpx.post(f"{url}/v1/chat/completions", timeout=timeout, headers={"Authorization": f"Bearer {key}"},
                            json={"model": model, "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hello"}]}).status_code
    except httpx.HTTPError:
        status = 0
    return status, started, time.perf_counter()


def swap_round(gw: Gateway, key: str, controller: Controller, target: str, *, held: int, load: int) -> dict[str, Any]:
    stop = threading.Event()
    pinned: list[tuple[int, float, float]] = []

    def keep_asking() -> None:
        while not stop.is_set():
            pinned.append(ask(gw.url, key, MODEL, 30))

    loaders = [threading.Thread(target=keep_asking) for _ in range(load)]
    for thread in loaders:
        thread.start()
    time.sleep(0.5)
    swaps = len(controller.swap_seconds)
    answers: list[tuple[int, float, float]] = []
    waiters = [threading.Thread(target=lambda: answers.append(ask(gw.url, key, target))) for _ in range(held)]
    began = time.perf_counter()
    for thread in waiters:
        thread.start()
    for thread in waiters:
        thread.join(180)
    ended = time.perf_counter()
    stop.set()
    for thread in loaders:
        thread.join(60)
    during = [p for p in pinned if p[1] >= began and p[2] <= ended]
    return {"target": target, "swap_s": controller.swap_seconds[-1] if len(controller.swap_seconds) > swaps else 0.0,
            "held_ok": sum(a[0] == 200 for a in answers), "held": held,
            "held_s": statistics.median(a[2] - a[1] for a in answers), "window_s": ended - began,
            "pinned_ok": sum(p[0] == 200 for p in during), "pinned_failed": sum(p[0] != 200 for p in during)}


def gateway_cpu(gateways: dict[str, Gateway], key: str, rounds: int, seconds: int) -> dict[str, list[float]]:
    """Each gateway's CPU ms per request for the resident model, in alternating wrk rounds."""
    cpu: dict[str, list[float]] = {name: [] for name in gateways}
    for gw in gateways.values():  # one answer through each, then a warm-up
        if ask(gw.url, key, MODEL)[0] != 200:
            raise RuntimeError(f"gateway {gw.port}: {MODEL} did not answer; see {gw.log}")
        wrk(gw.url, key, 1)
    for i in range(rounds):
        order = list(gateways.items())
        for name, gw in order if i % 2 == 0 else reversed(order):
            if gw.process is None:
                raise RuntimeError(f"gateway {gw.port} is not running")
            before = cpu_seconds(gw.process.pid)
            result = wrk(gw.url, key, seconds)
            if not result["requests"]:
                raise RuntimeError(f"gateway {gw.port}: wrk completed no request in {seconds} s; see {gw.log}")
            cpu[name].append((cpu_seconds(gw.process.pid) - before) * 1000 / result["requests"])
            print(f"round {i + 1} {name}: {result} cpu {cpu[name][-1]:.2f} ms/request", flush=True)
    return cpu


def hold_cost(calls: int = 200_000) -> float:
    """Microseconds per Gate.hold for a ready model (all the lifecycle adds to such a request), in this process."""
    from confgen.gateway.ondemand import Gate

    gate = Gate("http://127.0.0.1:1", "t", {MODEL: {"name": MODEL, "load_timeout_s": 60}}, {MODEL: "ready"})

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await gate.hold(MODEL)
        return (time.perf_counter() - started) / calls * 1e6

    return asyncio.run(run())


def cold_start(folder: Path, rounds: int) -> list[dict[str, float]]:
    """Ensure-ready of the real vLLM CPU build (tiny-cpu) from stopped, then its stop, through the controller."""
    from confgen.catalog import select

    project = Project(ROOT)
    environ = {**os.environ, "VLLM_PORT": str(VLLM_PORT)}  # exec-vllm selects the model again with it
    model = select(project, [MODEL], environ).models[0]
    run = RunDir(folder / "vllm-run")
    run.make()
    spec = vllm_server(ROOT, run, model, python=vllm_python(project), environ=environ, name="vllm-tiny")
    out: list[dict[str, float]] = []

    async def once(controller: Controller) -> dict[str, float]:
        started = time.monotonic()
        await controller.ensure_ready(MODEL, timeout_s=600)
        ready = time.monotonic() - started
        started = time.monotonic()
        await controller.stop(MODEL)
        return {"start_s": ready, "stop_s": time.monotonic() - started}

    async def main() -> None:
        controller = Controller(plan({MODEL: OnDemandModel(load_timeout_s=600)}, swap="stop"), {MODEL: spec},
                                poll_s=1.0, drain_s=0.2)
        await controller.start()
        try:
            for _ in range(rounds):
                out.append(await once(controller))
                print(f"cold start (vLLM CPU): {out[-1]}", flush=True)
        finally:
            await controller.close()

    asyncio.run(main())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, choices=range(2, 21), metavar="2..20")
    parser.add_argument("--seconds", type=int, default=5, choices=range(1, 61), metavar="1..60")
    parser.add_argument("--swaps", type=int, default=4, choices=range(2, 21), metavar="2..20")
    parser.add_argument("--held", type=int, default=8, choices=range(1, 101), metavar="1..100")
    parser.add_argument("--load", type=int, default=2, choices=range(1, 17), metavar="1..16")
    parser.add_argument("--cold-rounds", type=int, default=1, choices=range(6), metavar="0..5")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-ondemand-"))
    settings = {MODEL: OnDemandModel(pin=True), "od-a": OnDemandModel(preload=True), "od-b": OnDemandModel()}
    controller = Controller(plan(settings), {n: sim_spec(n, folder) for n in SIMS}, poll_s=0.5, drain_s=0.6,
                            api_key=VLLM_KEY)
    token_file = folder / "controller-token"
    token_file.write_text(TOKEN + "\n")
    view = folder / "ondemand.json"
    view.write_text(json.dumps({"controller": f"http://127.0.0.1:{CONTROLLER}", "token_file": str(token_file),
                                "models": {n: {"name": n, "load_timeout_s": 60} for n in SIMS}}))
    swaps: list[dict[str, Any]] = []
    with scratch_database(prefix="h17b_bench_") as url, redis_namespace() as namespace, serving(controller):
        deadline = time.monotonic() + 60
        while not all(controller.slots[n].state == "ready" for n in (MODEL, "od-a")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"preload not done: {controller.status()['models']}")
            time.sleep(0.2)
        config = render_config(folder / "generated", SIMS[MODEL], {n: SIMS[n] for n in ("od-a", "od-b")})
        on = OnGateway(ON_PORT, config, folder / "on", url, namespace, 5.0, view=view)
        off = OnGateway(OFF_PORT, config, folder / "off", url, namespace, 5.0)
        try:
            for gw in (on, off):
                gw.spawn()
            for gw in (on, off):
                gw.wait_healthy()
            key = create_key(url, "--alias", "bench", "--rpm", "10000000", "--tpm", "1000000000", "--max-parallel",
                             "1000")["key"]
            cpu = gateway_cpu({"on": on, "off": off}, key, args.rounds, args.seconds)
            for i in range(args.swaps):
                swaps.append(swap_round(on, key, controller, "od-b" if i % 2 == 0 else "od-a", held=args.held,
                                        load=args.load))
                print(f"swap {i + 1}: {swaps[-1]}", flush=True)
            time.sleep(2)  # the ledger writes every 0.2 s; give the last round's rows time to land
            waits = scalar(url, "SELECT count(*) FROM confgen_usage WHERE model_wait_ms > 0")
        finally:
            for gw in (on, off):
                gw.stop()
    cold = cold_start(folder, args.cold_rounds) if args.cold_rounds else []
    text = report(args, cpu, swaps, cold, waits=int(waits), hold_us=hold_cost())
    benchdoc.write_section(SECTION, text)
    print(text)
    return 0


def report(args: argparse.Namespace, cpu: dict[str, list[float]], swaps: list[dict[str, Any]],
           cold: list[dict[str, float]], *, waits: int, hold_us: float) -> str:
    on, off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    rows = "\n".join(f"| {i + 1} | {cpu['on'][i]:.2f} | {cpu['off'][i]:.2f} |" for i in range(args.rounds))
    spread = max(cpu["off"]) - min(cpu["off"])

    def method(i: int) -> str:
        return (f"sleep od-a + cold start od-b (simulator: start-up {SIM_TIMES['startup']:g} s)" if i == 0 else
                f"sleep + wake (simulator: sleep {SIM_TIMES['sleep']:g} s, wake {SIM_TIMES['wake']:g} s)")

    swap_rows = "\n".join(
        f"| {i + 1} | {s['target']} | {method(i)} | {s['swap_s']:.2f} | {s['held_ok']}/{s['held']} | "
        f"{s['held_s']:.2f} | {s['pinned_ok']} | {s['pinned_failed']} |" for i, s in enumerate(swaps))
    cold_rows = "\n".join(f"| {i + 1} | {c['start_s']:.1f} | {c['stop_s']:.1f} |" for i, c in enumerate(cold))
    cold_part = f"""
Cold start of the CPU model (the real vLLM CPU build serving tiny-cpu through the same controller; on CPU the
swap is stop/start, since the CPU build has no sleep mode):

| round | ensure-ready from stopped (s) | stop (s) |
|---|---|---|
{cold_rows}
""" if cold else ""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return f"""{SECTION}

Date: {now}. Machine: {benchdoc.machine()}; load average {load:.1f} at the end.
Command: `.venv/bin/python scripts/bench_ondemand.py --rounds {args.rounds} --seconds {args.seconds} \
--swaps {args.swaps} --held {args.held} --load {args.load} --cold-rounds {args.cold_rounds}`.

Method: the script's docstring. One controller owns three SIMULATED vLLMs (tiny-cpu pinned, od-a, od-b) in a
budget that holds tiny-cpu and one other; two real LiteLLM gateways with our hooks, an API key and Redis
limits, the same config: "on" has the lifecycle (CONFGEN_ONDEMAND: every model on demand), "off" has not.

Gateway CPU per request for the resident model (tiny-cpu), `wrk -t1 -c16 -d{args.seconds}s`, alternating:

| round | on: CPU ms/request | off: CPU ms/request |
|---|---|---|
{rows}

Median **{on:.2f}** (on) vs **{off:.2f}** (off) ms per request: **{(on / off - 1) * 100:+.1f}%** (goal: within noise,
at most +2%; the spread of "off" alone across rounds is {spread:.2f} ms, {spread / off * 100:.0f}%: where that spread
is larger than the goal, as on a loaded machine, this comparison cannot show 2%). What the lifecycle adds to a
request for a ready model is one `Gate.hold`, a dict lookup: **{hold_us:.2f} µs** per call, measured in-process,
{hold_us / 1000 / off * 100:.3f}% of "off"'s CPU per request; besides, each gateway process asks the controller for
the states twice a second (`REFRESH_S`, confgen/gateway/ondemand.py), a cost per second, not per request.

Swaps through the "on" gateway: {args.held} requests for the model that is not awake at once, while {args.load}
clients keep asking for the pinned model. Swap: the controller's time to make the model ready (evictions
included); held: requests answered / sent and their median time to the answer; pinned: requests for tiny-cpu
that began and ended within the swap.

| swap | to | method | swap (s) | held answered | held median (s) | pinned answered | pinned failed |
|---|---|---|---|---|---|---|---|
{swap_rows}

The ledger has {waits} rows with a model wait (`model_wait_ms` > 0) for {args.held * args.swaps} held requests (and the
first request of each model through the "on" gateway, which asks the controller once).
{cold_part}"""


if __name__ == "__main__":
    sys.exit(main())
