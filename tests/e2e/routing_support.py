"""The routing chaos tests' parts: a project rendered through the real compiler (deployments.yml included),
simulator replicas that can be killed and restarted, a bounded async load that records where each request
went, and the usage-ledger rows of a key.

Ports: gateways 14500-14549, simulators 15500-15599, vLLM 18500-18549.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from confgen.catalog import select
from confgen.keys import migrations, store
from confgen.load import Project
from confgen.render import write_all
from tests.conftest import TINY_CPU
from tests.simproc import SimProc, running_sim

ROOT = Path(__file__).resolve().parents[2]


def sim_model(timeout_s: float, port: int) -> str:
    """A model file whose `vllm serve` line is never run: the simulator stands in for vLLM (`port` only has to
    be unique in the catalog; deployments.yml says where the replicas are)."""
    return (
        "info: {description: simulated replica, params: '0', weights_gb: 0, gpu_memory_gb: 0, device: cpu}\n"
        f"serve: {{port: {port}}}\n"
        "command: vllm serve sim/model --max-model-len 4096\n"
        f"litellm: {{max_tokens: 16, timeout: {timeout_s}}}\n"
    )


def write_project(folder: Path, deployments: dict[str, Any], models: dict[str, str]) -> Project:
    """A project with the repo's vars.env and template, the given model files and deployments.yml."""
    (folder / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "vars.env", folder / "vars.env")
    shutil.copy(ROOT / "litellm_config.template.yaml", folder / "litellm_config.template.yaml")
    for name, text in models.items():
        (folder / "models" / f"{name}.yml").write_text(text, encoding="utf-8")
    (folder / "deployments.yml").write_text(yaml.safe_dump(deployments, sort_keys=False), encoding="utf-8")
    return Project(folder)


def render(project: Project, names: list[str], out: Path, environ: dict[str, str]) -> Path:
    write_all(select(project, names, environ), out)
    return out / "config.yaml"


TINY_CPU_MODEL = TINY_CPU  # the real tiny-cpu model file (a copy of models/tiny-cpu.yml)


class Replica:
    """One simulator standing in for a vLLM on a host (a loopback address of its own): kill, restart."""

    def __init__(self, host: str, port: int, name: str, vllm_key: str, *flags: str) -> None:
        self.host, self.port, self.name, self.key, self.flags = host, port, name, vllm_key, flags
        self._ctx: AbstractContextManager[SimProc] | None = None
        self.sim: SimProc | None = None

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> Replica:
        self._ctx = running_sim(self.port, "--served-model-name", self.name, *self.flags, host=self.host,
                                env={"VLLM_API_KEY": self.key})
        self.sim = self._ctx.__enter__()
        return self

    def kill(self) -> None:
        """SIGKILL: a node that dies without a goodbye (connections in flight are reset)."""
        if self.sim is not None and self._ctx is not None:
            self.sim.process.kill()
            self.sim.process.wait(10)
            self._ctx.__exit__(None, None, None)
        self.sim, self._ctx = None, None

    def stop(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
        self.sim, self._ctx = None, None

    def faults(self, **faults: Any) -> None:
        assert self.sim is not None
        self.sim.set_faults(**faults)

    def reset_stats(self) -> None:
        assert self.sim is not None
        self.sim.reset_stats()

    def stats(self) -> dict[str, Any]:
        assert self.sim is not None
        return self.sim.stats()

    def served(self) -> int:
        """Requests it answered 200 (health probes included)."""
        return int(self.stats()["by_status"].get("200", 0))


@dataclass
class Result:
    index: int
    gateway: str
    stream: bool
    started: float
    ended: float
    status: int | str  # HTTP status, or the exception's name; a stream that broke off: "broken stream"
    api_base: str | None = None  # x-litellm-model-api-base: the replica that answered
    group: str | None = None  # x-litellm-model-group: the model that answered (a fallback says so)
    model: str | None = None  # the response's own `model` field
    retries: int = 0
    fallbacks: int = 0
    call_id: str | None = None  # x-litellm-call-id: the ledger row's call_id
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    """`total` chat requests (every `stream_every`-th streamed) at `concurrency` over the gateways, in a thread.

    `progress()` counts finished requests while it runs; every request ends within `timeout_s`."""

    gateways: list[str]
    key: str
    model: str
    total: int
    concurrency: int = 8
    stream_every: int = 0  # 0: none streamed; 2: every other one
    timeout_s: float = 60.0
    results: list[Result] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def run(self) -> list[Result]:
        return self.start().wait()

    def progress(self) -> int:
        return len(self.results)

    def wait(self, timeout: float = 240) -> list[Result]:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"load still running after {timeout} s ({self.progress()} done)"
        return sorted(self.results, key=lambda r: r.index)

    async def _run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.total):
            queue.put_nowait(i)
        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency * 2)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, queue) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            gateway = self.gateways[i % len(self.gateways)]
            stream = bool(self.stream_every) and i % self.stream_every == 0
            started = time.monotonic()
            try:
                result = await self._one(client, gateway, i, stream, started)
            except httpx.HTTPError as exc:
                result = Result(i, gateway, stream, started, time.monotonic(), type(exc).__name__, detail=str(exc))
            self.results.append(result)

    async def _one(self, client: httpx.AsyncClient, gateway: str, i: int, stream: bool, started: float) -> Result:
        body = {"model": self.model, "messages": [{"role": "user", "content": f"request {i}"}], "stream": stream}
        headers = {"Authorization": f"Bearer {self.key}"}
        async with client.stream("POST", f"{gateway}/v1/chat/completions", json=body, headers=headers) as resp:
            text = (await resp.aread()).decode(errors="replace")
        h = resp.headers
        result = Result(i, gateway, stream, started, time.monotonic(), resp.status_code,
                        h.get("x-litellm-model-api-base"), h.get("x-litellm-model-group"),
                        retries=int(h.get("x-litellm-attempted-retries") or 0),
                        fallbacks=int(h.get("x-litellm-attempted-fallbacks") or 0), call_id=h.get("x-litellm-call-id"))
        if resp.status_code != 200:
            result.detail = text[:300]
            return result
        if stream:
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            chunks = [json.loads(e) for e in events if e != "[DONE]"]
            if not events or events[-1] != "[DONE]" or any("error" in c for c in chunks):
                result.status, result.detail = "broken stream", text[-300:]
            result.model = chunks[0].get("model") if chunks else None
        else:
            result.model = json.loads(text).get("model")
        return result


def tally(results: list[Result]) -> dict[str, Any]:
    return {"sent": len(results), "succeeded": sum(r.ok for r in results),
            "failed": sum(not r.ok for r in results),
            "by_replica": dict(Counter(r.api_base for r in results if r.ok)),
            "by_model": dict(Counter(r.group for r in results if r.ok)),
            "retried": sum(r.retries > 0 for r in results), "fell_back": sum(r.fallbacks > 0 for r in results)}


def new_key(database_url: str, alias: str) -> tuple[str, str]:
    """A key of the test's own (its ledger rows are its requests): (key, prefix)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.migrate(conn)
        key, record = store.create(conn, store.NewKey(alias=alias))
    return key, record.prefix


def ledger_rows(database_url: str, prefix: str) -> list[tuple[str | None, int]]:
    """(call_id, status) of every usage row of the key."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT call_id, status FROM confgen_usage WHERE key_prefix = %s", (prefix,))
        return [(r[0], int(r[1])) for r in rows.fetchall()]


def wait_ledger(database_url: str, prefix: str, expected: int, timeout: float = 40) -> list[tuple[str | None, int]]:
    """The key's rows once `expected` are in (or what is there after `timeout` s: the test then says so)."""
    end = time.monotonic() + timeout
    rows = ledger_rows(database_url, prefix)
    while len(rows) < expected and time.monotonic() < end:
        time.sleep(0.3)
        rows = ledger_rows(database_url, prefix)
    time.sleep(0.5)  # a late extra row (a failed attempt recorded twice) would show now
    return ledger_rows(database_url, prefix)


def status_mismatches(results: list[Result], rows: list[tuple[str | None, int]]) -> list[Result]:
    """Requests whose ledger row disagrees with the client (matched by call id): answered there, an error here or
    the other way round (a stream that broke off after its 200 is an error in both)."""
    by_call = dict(rows)
    return [r for r in results if r.call_id in by_call and (by_call[r.call_id] == 200) != r.ok]


def report(name: str, results: list[Result], rows: list[tuple[str | None, int]], **extra: Any) -> dict[str, Any]:
    """What each chaos test prints: requests sent / succeeded / failed and the key's ledger rows."""
    figures = tally(results)
    figures["ledger_rows"] = len(rows)
    figures["ledger_by_status"] = dict(Counter(status for _, status in rows))
    figures["ledger_status_differs"] = len(status_mismatches(results, rows))
    figures.update(extra)
    print(f"\n[{name}] " + json.dumps(figures, sort_keys=True))  # the figures docs/reliability.md quotes
    for r in results:
        if not r.ok:
            print(f"  failed #{r.index} ({'stream' if r.stream else 'plain'}) {r.status}: {r.detail[:160]}")
    return figures
