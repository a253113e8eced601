"""The coding-agent tests' parts: the pinned CLIs (clients/), a project of our own whose models point at
simulators or a CPU vLLM, the `confgen` CLI run as the user would (scratch HOME, no network but the gateway
and PostgreSQL), and the usage ledger.

Ports: gateways 14300-14349, simulators and the test vLLM 15300-15349.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from confgen.catalog import select
from confgen.load import Project
from confgen.render import write_all
from tests.e2e.keys_support import MASTER_KEY, VLLM_KEY, Gateway, poll
from tests.e2e.netns import Bridge, fallback_env

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_BIN = ROOT / "clients" / "node_modules" / ".bin"
PG_PORT = 5432
USER = "tester"
ALIAS = f"{USER}-agents"  # the alias `confgen launch` gives the user's key


def ensure_clients() -> Path:
    """The pinned CLIs, installed by scripts/install-clients (npm ci) when missing or out of date."""
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "install-clients")], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, f"scripts/install-clients failed:\n{done.stdout}\n{done.stderr}"
    for name in ("claude", "codex", "cn"):
        assert (CLIENTS_BIN / name).exists(), f"{name} missing in {CLIENTS_BIN}"
    if done.stdout.strip():
        print(f"{done.stdout.strip()} [{time.monotonic() - started:.0f} s]")
    return CLIENTS_BIN


def sim_model(port: int, *, context: int = 32768, max_tokens: int = 1024, **litellm: str) -> str:
    """A model file whose vLLM is a simulator on `port` (the command is never run)."""
    extra = "".join(f"  {k}: {v}\n" for k, v in litellm.items())
    return (f"info:\n  description: simulator on {port}\n  params: '0'\n  weights_gb: 0\n  gpu_memory_gb: 0\n"
            f"  device: cpu\nserve:\n  port: {port}\ncommand: vllm serve sim --max-model-len {context}\n"
            f"litellm:\n  max_tokens: {max_tokens}\n  timeout: 60\n{extra}")


def make_project(folder: Path, models: dict[str, str], gateway_port: int) -> Project:
    """vars.env and the template from the repo (LITELLM_PORT set to ours), the model files, both secrets."""
    (folder / "models").mkdir(parents=True)
    text = (ROOT / "vars.env").read_text(encoding="utf-8")
    (folder / "vars.env").write_text(re.sub(r"(?m)^LITELLM_PORT=.*$", f"LITELLM_PORT={gateway_port}", text),
                                     encoding="utf-8")
    shutil.copy(ROOT / "litellm_config.template.yaml", folder / "litellm_config.template.yaml")
    for name, body in models.items():
        (folder / "models" / f"{name}.yml").write_text(body, encoding="utf-8")
    secrets = folder / "secrets"
    secrets.mkdir(mode=0o700)
    for name, value in (("LITELLM_MASTER_KEY", MASTER_KEY), ("VLLM_API_KEY", VLLM_KEY)):
        (secrets / name).write_text(value + "\n", encoding="utf-8")
        (secrets / name).chmod(0o600)
    return Project(folder)


def start_vllm(project_root: Path, model: str, folder: Path) -> subprocess.Popen[bytes]:
    """A real CPU vLLM through the shared entrypoint (`confgen exec-vllm`, what ./runMe.sh runs), in the
    project folder (a model's relative path is read from there), in a process group of its own (stop it with
    tests.procgroup.stop_group). Its log: folder/vllm.log."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CONFGEN_ROOT", "PROMETHEUS_MULTIPROC_DIR", "MODEL")}
    env.update({"VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(folder), "VLLM_CACHE_ROOT": str(folder / "cache"),
                "PYTHONUNBUFFERED": "1"})
    argv = [str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "confgen", "--root", str(project_root), "exec-vllm",
            "--model", model, "--out", str(folder / "generated")]
    with (folder / "vllm.log").open("wb") as log:
        return subprocess.Popen(argv, env=env, cwd=project_root, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_vllm(proc: subprocess.Popen[bytes], port: int, folder: Path, timeout: float = 300) -> None:
    """Until the vLLM of start_vllm answers /health (its log's tail if it exits first)."""

    def healthy() -> bool:
        assert proc.poll() is None, (folder / "vllm.log").read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll(healthy, timeout, 1.0, f"the CPU vLLM on {port} healthy")


def start_gateway(project: Project, names: list[str], port: int, *, folder: Path, database_url: str,
                  redis_prefix: str, lane: str = "on") -> Gateway:
    """The real LiteLLM on the config confgen renders for `names` (keys and ledger in `database_url`), with
    the relay lane (confgen/gateway/lane.py) on or off."""
    out = folder / "generated"
    write_all(select(project, names, environ={}), out)
    return Gateway(port, out / "config.yaml", folder / "gateway", database_url, redis_prefix,
                   extra_env={"CONFGEN_RELAY_LANE": lane}).start()


@dataclass
class User:
    """Someone with a scratch HOME who runs `confgen` and the agents from a work folder."""

    project: Project
    home: Path
    work: Path
    database_url: str
    gateway_port: int
    env_extra: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANTHROPIC_", "CLAUDE_", "CODEX_", "OPENAI_", "CONFGEN_"))}
        env.update({"HOME": str(self.home), "USER": USER, "DATABASE_URL": self.database_url,
                    "PATH": f"{CLIENTS_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                    "XDG_CONFIG_HOME": str(self.home / ".config"), **self.env_extra, **extra})
        for name in ("VLLM_PORT", "LITELLM_PORT", "MODEL"):
            env.pop(name, None)
        return env

    def run(self, argv: list[str], *, timeout: float = 180, isolate: bool = True,
            **extra: str) -> subprocess.CompletedProcess[str]:
        """Run argv in the work folder, inside a namespace that reaches only the gateway and PostgreSQL."""
        env = self.env(**extra)
        with Bridge([self.gateway_port, PG_PORT]) as bridge:
            command = bridge.wrap(argv) if isolate else argv
            if isolate and not bridge.isolated:
                env = fallback_env(env)
            return subprocess.run(command, cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)

    def confgen(self, *args: str, timeout: float = 180, isolate: bool = True,
                **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "confgen", "--root", str(self.project.root), *args],
                        timeout=timeout, isolate=isolate, **extra)

    def key(self) -> str:
        return (self.home / ".config" / "confgen" / "keys" / f"{ALIAS}.key").read_text(encoding="utf-8").strip()


def ok(done: subprocess.CompletedProcess[str], what: str = "command") -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (f"{what} -> {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
                                  f"stderr:\n{done.stderr[-3000:]}")
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a CLI's output (Codex --json, Claude stream-json)."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def ledger(database_url: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Usage rows (oldest first), of one key alias if given."""
    query = ("SELECT key_alias, key_prefix, model, route, prompt_tokens, completion_tokens, status, stream "
             "FROM confgen_usage" + (" WHERE key_alias = %s" if alias else "") + " ORDER BY ts")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn:
        cur = conn.execute(query.encode(), (alias,) if alias else ())
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def wait_ledger(database_url: str, alias: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """At least `count` rows for `alias` (the writer batches every 0.2 s)."""
    end = time.monotonic() + timeout
    rows = ledger(database_url, alias)
    while len(rows) < count and time.monotonic() < end:
        time.sleep(0.2)
        rows = ledger(database_url, alias)
    assert len(rows) >= count, f"{len(rows)} ledger rows for {alias}, expected {count}: {rows}"
    return rows
