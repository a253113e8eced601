"""Real services for the keys and ledger tests: a database of their own on the machine's PostgreSQL, a
private PostgreSQL cluster that can be stopped and started, LiteLLM gateways on our config in front of the
simulator, the `confgen` CLI as a subprocess, and a bounded load generator.

Ports: gateways 14400-14449, simulators 18400-18449, private PostgreSQL 15432-15439.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import yaml
from psycopg import sql

from confgen.catalog import select
from confgen.load import Project
from confgen.render import render_all
from confgen.runtime import gateway_tuning

ROOT = Path(__file__).resolve().parents[2]
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MODEL = "tiny-cpu"
VLLM_KEY = "sim-key-" + secrets.token_hex(8)
MASTER_KEY = "sk-master-" + secrets.token_hex(16)


def poll(check: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """check() until truthy (returned), at most `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout} s (last: {value!r})")
        time.sleep(interval)


@contextmanager
def scratch_database(server: str = MACHINE_PG, prefix: str = "confgen_test_") -> Iterator[str]:
    """A new database `<prefix><random>`, dropped afterwards."""
    name = f"{prefix}{secrets.token_hex(4)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def redis_namespace() -> Iterator[str]:
    """A key prefix of our own on the machine's Redis; its keys are deleted afterwards."""
    prefix = f"confgen_test_{secrets.token_hex(4)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


def scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        return row[0] if row else None


class PrivatePostgres:
    """A PostgreSQL 15 cluster of our own (initdb in a temp folder) that tests may stop and start.

    As root the cluster belongs to the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.log = folder / "postgres.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def server(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
            raise AssertionError(f"{' '.join(argv)} -> {done.returncode}\n{done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.folder, *self.folder.parents):
                if path == Path("/"):
                    break
                if path.stat().st_mode & 0o001 == 0:
                    path.chmod(path.stat().st_mode | 0o711)  # let postgres reach its folder
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def render_config(folder: Path, sim_port: int, also: dict[str, int] | None = None) -> Path:
    """The real template rendered for tiny-cpu, pointed at the simulator; `also` adds model groups (served
    name -> simulator port) with tiny-cpu's settings."""
    selection = select(Project(ROOT), [MODEL], {**os.environ, "VLLM_PORT": str(sim_port)})
    folder.mkdir(parents=True, exist_ok=True)
    text = render_all(selection)["config.yaml"]
    if also:
        data = yaml.safe_load(text)
        for name, port in also.items():
            extra = copy.deepcopy(data["model_list"][0])
            extra["model_name"] = name
            extra["litellm_params"].update(model=f"hosted_vllm/{name}", api_base=f"http://127.0.0.1:{port}/v1")
            data["model_list"].append(extra)
        text = yaml.safe_dump(data, sort_keys=False)
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Gateway:
    port: int
    config: Path
    folder: Path
    database_url: str
    redis_prefix: str
    key_ttl_s: float = 2.0
    process: subprocess.Popen[bytes] | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"  # the machine's; a test that breaks Redis brings its own
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. CONFGEN_RELAY_LANE=off

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"litellm-{self.port}.log"

    @property
    def spool(self) -> Path:
        return self.folder / "spool"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update({"LITELLM_MASTER_KEY": MASTER_KEY, "VLLM_API_KEY": VLLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "PYTHONUNBUFFERED": "1", "CONFGEN_DATABASE_URL": self.database_url,
                    "CONFGEN_REDIS_URL": self.redis_url, "CONFGEN_REDIS_PREFIX": self.redis_prefix,
                    "CONFGEN_LEDGER_SPOOL": str(self.spool), "CONFGEN_KEYS_SNAPSHOT": str(self.folder / "keys.json"),
                    "CONFGEN_KEY_CACHE_TTL": str(self.key_ttl_s),
                    "PROMETHEUS_MULTIPROC_DIR": str(self.folder / f"prom-{self.port}"),
                    # Drain in-flight requests on SIGTERM for at most this long (LiteLLM default 30 s).
                    "GRACEFUL_SHUTDOWN_TIMEOUT": "10", **gateway_tuning.WORKER_ENV, **self.extra_env})
        return env

    def start(self, timeout: float = 120) -> Gateway:
        return self.spawn().wait_healthy(timeout)

    def spawn(self) -> Gateway:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"prom-{self.port}").mkdir(exist_ok=True)
        litellm = Path(sys.executable).parent / "litellm"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(litellm), "--config", str(self.config), "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env(), cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_healthy(self, timeout: float = 120) -> Gateway:
        process = self.process
        assert process is not None

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gateway {self.port} exited:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll(healthy, timeout, 0.3, f"gateway {self.port} healthy")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def confgen(*args: str, database_url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("CONFGEN_ROOT", None)
    done = subprocess.run([sys.executable, "-m", "confgen", "--root", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"confgen {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def create_key(database_url: str, *args: str) -> dict[str, Any]:
    created: dict[str, Any] = json.loads(confgen("keys", "create", "--json", *args, database_url=database_url).stdout)
    return created


@dataclass
class Outcome:
    status: int | str
    started: float
    call_id: str | None = None
    tokens: int = 0
    retry_after: str | None = None


@dataclass
class Load:
    """`total` chat requests at `concurrency`, spread over `urls`, in a thread: progress() while it runs."""

    urls: list[str]
    key: str
    total: int
    concurrency: int
    max_tokens: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def progress(self) -> int:
        return len(self.outcomes)

    def wait(self, timeout: float = 300) -> list[Outcome]:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"load still running after {timeout} s ({self.progress()} done)"
        return self.outcomes

    async def _run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.total):
            queue.put_nowait(i)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, queue) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, queue: asyncio.Queue[int]) -> None:
        body = {"model": MODEL, "max_tokens": self.max_tokens, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {self.key}"}
        while not queue.empty():
            i = queue.get_nowait()
            url = self.urls[i % len(self.urls)]
            started = time.time()
            try:
                resp = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.outcomes.append(Outcome(type(exc).__name__, started))
                continue
            tokens = 0
            if resp.status_code == 200:
                usage = resp.json().get("usage") or {}
                tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
            self.outcomes.append(Outcome(resp.status_code, started, resp.headers.get("x-litellm-call-id"), tokens,
                                         resp.headers.get("retry-after")))


def free_spool_rows(folder: Path) -> int:
    """Rows waiting in a spool folder."""
    return sum(1 for path in folder.glob("*.jsonl") for line in path.read_bytes().splitlines() if line.strip())


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
