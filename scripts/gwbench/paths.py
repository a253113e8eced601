"""The paths under test, all in front of one simulator: direct, an nginx hop, bare LiteLLM, our stack.

`running_paths` starts everything (gateways in parallel), yields the paths, and stops what it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from confgen.catalog import select
from confgen.keys import migrations, store
from confgen.keys.record import Limits
from confgen.load import Project
from confgen.render import nginx, write_all
from confgen.runtime import datastores
from confgen.runtime.rundir import RunDir
from confgen.runtime.stack import gateway_launch
from gwbench.load import Target
from gwbench.procs import Server, healthy, pin, spawn, stop_group, wait_until
from tests.nginxproc import make_certs, nginx_test, running_nginx
from tests.simproc import running_sim

ROOT = Path(__file__).resolve().parents[2]
Wait = Callable[[float], None]

MODEL = "tiny-cpu"
BENCH_DB = "confgen_bench_gateway"
# A key far above any load here: the limiter still runs on every request (Redis admit + settle).
KEY_LIMITS = Limits(rpm=10_000_000, tpm=1_000_000_000, max_parallel=100_000)
BARE_CONFIG = """model_list:
  - model_name: {model}
    litellm_params:
      model: hosted_vllm/{model}
      api_base: http://127.0.0.1:{port}/v1
      api_key: os.environ/VLLM_API_KEY
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""


@dataclass
class Route:
    """One path: where clients send requests and which process tree is the gateway (None: direct)."""

    name: str
    target: Target
    server: Server | None
    latency: bool = True  # c=1 latency and TTFT rows (the 2-worker variant only measures capacity)


@dataclass
class Bench:
    routes: list[Route]
    db: Datastore
    work: Path


@dataclass(frozen=True)
class Ports:
    sim: int = 15200
    nginx: int = 14240  # and the next one (nginx's plain-HTTP port)
    bare: int = 14200
    full: int = 14201
    full2: int = 14202
    bare2: int = 14203
    full_off: int = 14204

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """Eight ports from `base` on (--ports-from: beside other benchmarks and tests on one machine)."""
        return cls(sim=base, nginx=base + 1, bare=base + 3, full=base + 4, full2=base + 5, bare2=base + 6,
                   full_off=base + 7)


@dataclass(frozen=True)
class Cores:
    """Which cores run the gateways and which the clients (wrk, httpx, the simulator); None: no pinning."""

    gateway: set[int] | None
    gateway2: set[int] | None
    clients: set[int] | None

    @classmethod
    def plan(cls, enabled: bool) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2:
            return cls(None, None, None)
        if len(cpus) >= 4:
            return cls({cpus[0]}, set(cpus[:2]), set(cpus[2:]))
        # 2-3 cores: one for a one-worker gateway, the rest for the clients; two workers get two cores
        # (shared with the clients).
        return cls({cpus[0]}, set(cpus[:2]), set(cpus[1:]))


class Datastore:
    """A database of our own for the benchmark's key and ledger rows, and a Redis key prefix; both removed."""

    def __init__(self, base_url: str, redis_url: str, name: str = BENCH_DB) -> None:
        self.name = name
        self.url = make_conninfo(base_url, dbname=name)
        self.admin = make_conninfo(base_url, dbname="postgres")
        self.redis_url = redis_url
        self.prefix = f"confgen-bench-gw-{os.getpid()}:"

    def create_key(self) -> str:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
            migrations.migrate(conn)
            key: str
            key, _ = store.create(conn, store.NewKey(alias="bench", models=(MODEL,), limits=KEY_LIMITS))
        return key

    def ledger_rows(self) -> int:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM confgen_usage").fetchone()
        return int(row[0]) if row else 0

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        client = redis.Redis.from_url(self.redis_url)
        for name in client.scan_iter(match=self.prefix + "*", count=1000):
            client.delete(name)


def _start_litellm(name: str, argv: list[str], env: dict[str, str], *, folder: Path, port: int,
                   stack: ExitStack) -> tuple[Server, Wait]:
    log = folder / f"{name}.log"
    proc = spawn(argv, env, log, folder)
    stack.callback(stop_group, proc)
    url = f"http://127.0.0.1:{port}"

    def wait(timeout_s: float) -> None:
        wait_until(healthy(f"{url}/health/liveliness"), proc, f"LiteLLM ({name})", log, timeout_s)

    return Server(name, proc.pid, url, log), wait


def _bare(name: str, *, work: Path, ports: Ports, port: int, workers: int, keys: dict[str, str],
          stack: ExitStack) -> tuple[Server, Wait]:
    folder = work / name.replace(" ", "-").replace(",", "")
    folder.mkdir()
    (folder / "config.yaml").write_text(BARE_CONFIG.format(model=MODEL, port=ports.sim))
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    # Only what the proxy needs to start here: the key, and the local price map (FINDINGS: else ~7 s of retries).
    env.update(keys, LITELLM_LOCAL_MODEL_COST_MAP="True")
    litellm = Path(sys.executable).parent / "litellm"
    argv = [str(litellm), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:  # LiteLLM's defaults otherwise: no multiprocess metrics folder, as `pip install` users get
        argv += ["--num_workers", str(workers)]
    return _start_litellm(name, argv, env, folder=folder, port=port, stack=stack)


def _full(name: str, *, work: Path, ports: Ports, port: int, workers: int, keys: dict[str, str], db: Datastore,
          stack: ExitStack, lane: str = "on") -> tuple[Server, Wait]:
    run = RunDir(work / name.replace(" ", "-").replace(",", ""))
    run.make()
    environ = {**os.environ, "VLLM_PORT": str(ports.sim), "LITELLM_PORT": str(port),
               "LITELLM_NUM_WORKERS": str(workers), "DATABASE_URL": db.url, "RELAY_LANE": lane,
               # The simulator takes whatever comes; LiteLLM's default of 16 in flight per model would
               # turn the 32- and 64-connection runs into 429s.
               "MAX_PARALLEL_REQUESTS": "1024"}
    selection = select(Project(ROOT), [MODEL], environ)
    write_all(selection, run.generated)
    settings = selection.gvars.settings
    stores = {**datastores.gateway_env(settings, run), "CONFGEN_REDIS_PREFIX": db.prefix}
    argv, env = gateway_launch(run, environ={**environ, **stores}, secrets=keys, settings=settings)
    return _start_litellm(name, argv, env, folder=run.generated, port=port, stack=stack)


def _nginx(work: Path, ports: Ports, vllm_key: str, stack: ExitStack) -> tuple[Server, ssl.SSLContext]:
    certs = make_certs(work / "certs")
    out = work / "nginx"
    environ = {**os.environ, "VLLM_PORT": str(ports.sim)}
    selection = select(Project(ROOT), [MODEL], environ)
    # The public path: nginx's own hop straight to the model (the hop's cost alone). 512 connections per
    # client address instead of 64, for the 64 streams + wrk's connections.
    options = nginx.NginxOptions(certs=certs, https_port=ports.nginx, http_port=ports.nginx + 1, public_paths=True,
                                 max_conn_per_ip=512)
    nginx.write(selection, options, out, vllm_key)
    nginx_test(out)
    proc = stack.enter_context(running_nginx(out, ports.nginx))
    url = f"https://127.0.0.1:{ports.nginx}"
    return Server("nginx", proc.pid, url, out / "stderr.log"), ssl.create_default_context(cafile=str(certs / "ca.crt"))


@contextmanager
def running_paths(ports: Ports, cores: Cores, start_timeout_s: float, keep: bool = False,
                  database: str = BENCH_DB) -> Iterator[Bench]:
    """Start every path; stop them at the end. keep: leave the work folder (configs, logs) in place."""
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    work.chmod(0o755)  # nginx's workers (nobody) read the prefix folder
    vllm_key = "bench-vllm-" + secrets.token_urlsafe(24)
    keys = {"LITELLM_MASTER_KEY": "sk-bench-" + secrets.token_urlsafe(24), "VLLM_API_KEY": vllm_key}
    settings = select(Project(ROOT), [MODEL], dict(os.environ)).gvars.settings
    db = Datastore(settings.DATABASE_URL, settings.REDIS_URL, database)
    if cores.clients:
        os.sched_setaffinity(0, cores.clients)  # this process, wrk and the simulator (children inherit it)
    with ExitStack() as stack:
        if keep:
            stack.callback(print, f"configs and logs kept in {work}")
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        api_key = db.create_key()
        stack.callback(db.drop)
        sim = stack.enter_context(running_sim(
            ports.sim, "--served-model-name", MODEL, "--ttft-ms", "0", "--itl-ms", "10", "--output-tokens", "256",
            "--max-num-seqs", "4096", "--log-level", "warning", env={"VLLM_API_KEY": vllm_key}))
        bare, wait_bare = _bare("bare LiteLLM", work=work, ports=ports, port=ports.bare, workers=1, keys=keys,
                                stack=stack)
        bare2, wait_bare2 = _bare("bare LiteLLM, 2 workers", work=work, ports=ports, port=ports.bare2, workers=2,
                                  keys=keys, stack=stack)
        full, wait_full = _full("our stack", work=work, ports=ports, port=ports.full, workers=1, keys=keys,
                                db=db, stack=stack)
        full2, wait_full2 = _full("our stack, 2 workers", work=work, ports=ports, port=ports.full2, workers=2,
                                  keys=keys, db=db, stack=stack)
        full_off, wait_full_off = _full("our stack, lane off", work=work, ports=ports, port=ports.full_off,
                                        workers=1, keys=keys, db=db, stack=stack, lane="off")
        ngx, ca = _nginx(work, ports, vllm_key, stack)
        for wait in (wait_bare, wait_bare2, wait_full, wait_full2, wait_full_off):
            wait(start_timeout_s)
        for server, cpus in ((bare, cores.gateway), (bare2, cores.gateway2), (full, cores.gateway),
                             (full2, cores.gateway2), (full_off, cores.gateway), (ngx, cores.gateway)):
            server.refresh()
            server.cpus = cpus
            if cpus:
                pin(server.pids, cpus)
        chat = "/v1/chat/completions"
        master = {"Authorization": f"Bearer {keys['LITELLM_MASTER_KEY']}"}
        user = {"Authorization": f"Bearer {api_key}"}
        yield Bench(routes=[
            Route("direct", Target(sim.url + chat, {"Authorization": f"Bearer {vllm_key}"}), None),
            Route("nginx hop", Target(f"{ngx.url}/{MODEL}{chat}", {}, ca), ngx),
            Route("bare LiteLLM", Target(bare.url + chat, master), bare),
            Route("bare LiteLLM, 2 workers", Target(bare2.url + chat, master), bare2, latency=False),
            Route("our stack", Target(full.url + chat, user), full),
            Route("our stack, lane off", Target(full_off.url + chat, user), full_off),
            Route("our stack, 2 workers", Target(full2.url + chat, user), full2, latency=False),
        ], db=db, work=work)
