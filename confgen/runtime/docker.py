"""The Docker deployment behind ./runMe.sh: compose up, wait for health, print the endpoint; stop,
status and logs. A start that fails is taken down again (the database volume stays)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from confgen.atomic import write_atomic
from confgen.catalog import select
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project
from confgen.render import compose
from confgen.runtime import docker_host, ports, pull, secret_files, vllm_phases
from confgen.runtime import host as host_mod
from confgen.runtime.deployment import Deployment, plan_deployment
from confgen.runtime.docker_host import DockerHost
from confgen.runtime.rundir import RunDir

STATE = "docker.json"
DEFAULT_PROJECT = "confgen"
DB_SECRET = "POSTGRES_PASSWORD"  # noqa: S105 - the name of the secret file, not its value
POLL_S = 2.0


@dataclass
class DockerState:
    project: str
    files: list[str]
    models: list[str]
    gateway: str
    started_at: str
    compose: list[str] = field(default_factory=list)


def wanted(environ: dict[str, str]) -> bool:
    """MODELS (several models) or CONFGEN_DEPLOY=docker pick the Docker deployment; GPU models always run there."""
    return bool(environ.get("MODELS")) or environ.get("CONFGEN_DEPLOY") == "docker"


def model_names(environ: dict[str, str], default: str) -> tuple[list[str], str]:
    if environ.get("MODELS"):
        return [n.strip() for n in environ["MODELS"].split(",") if n.strip()], "MODELS"
    return [environ.get("MODEL") or default], "MODEL"


def read_state(run: RunDir) -> DockerState | None:
    try:
        return DockerState(**json.loads((run.path / STATE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _reach(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - compared, not bound


def files_for(project: Project, run: RunDir, deployment: Deployment, environ: dict[str, str]) -> list[Path]:
    """docker-compose.yml + the device override for one model; a generated file for several. Then
    CONFGEN_COMPOSE_OVERRIDES (':'-separated), e.g. host networking."""
    if len(deployment.names) > 1:
        files = [compose.write(project, deployment, run.path / compose.OUTPUT)]
    else:
        files = [project.root / compose.BASE, project.root / compose.DEVICE_OVERRIDE[deployment.device]]
    for extra in filter(None, environ.get("CONFGEN_COMPOSE_OVERRIDES", "").split(":")):
        path = Path(extra) if Path(extra).is_absolute() else project.root / extra
        if not path.is_file():
            raise ConfgenError.one("CONFGEN_COMPOSE_OVERRIDES", f"{extra}: no such file", "fix the path")
        files.append(path)
    return files


def _ensure_db_secret(project: Project) -> bool:
    path = project.secrets_dir / DB_SECRET
    if path.exists():
        return False
    write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return True


class Stack:
    """One compose project: the command line and the environment every call shares."""

    def __init__(self, project: Project, host: DockerHost, name: str, files: list[Path],
                 env: dict[str, str]) -> None:
        self.project, self.host, self.name, self.files, self.env = project, host, name, files, env

    def argv(self, *args: str) -> list[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        return [*self.host.compose, "-p", self.name, "--project-directory", str(self.project.root), *files, *args]

    def call(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return docker_host.run(self.argv(*args), self.env, timeout, cwd=self.project.root)

    def containers(self) -> list[dict[str, Any]]:
        ids = docker_host.run([self.host.docker, "ps", "-aq", "--filter",
                               f"label=com.docker.compose.project={self.name}"], self.env).stdout.split()
        if not ids:
            return []
        out = docker_host.run([self.host.docker, "inspect", *ids], self.env)
        try:
            found = json.loads(out.stdout) if out.returncode == 0 else []
        except ValueError:
            return []
        return [c for c in found if isinstance(c, dict)]

    def down(self) -> None:
        # No -v: the database volume (usage rows) outlives the containers.
        self.call("down", "--remove-orphans", timeout=180)


def service_of(container: dict[str, Any]) -> str:
    return str(container.get("Config", {}).get("Labels", {}).get("com.docker.compose.service", "?"))


def health_of(container: dict[str, Any]) -> str:
    state = container.get("State", {})
    health = state.get("Health", {}).get("Status")
    return str(health or state.get("Status", "?"))


def _failed(container: dict[str, Any]) -> str | None:
    state = container.get("State", {})
    if container.get("RestartCount", 0) or state.get("Restarting"):
        return "exited during start-up and is being restarted"
    if state.get("Status") in {"exited", "dead"}:
        return f"exited with code {state.get('ExitCode')}"
    if state.get("Health", {}).get("Status") == "unhealthy":
        log = state.get("Health", {}).get("Log") or [{}]
        return f"unhealthy: {str(log[-1].get('Output', '')).strip()[:200]}"
    return None


def wait_up(stack: Stack, services: list[str], log: Path, deadline_s: float) -> None:
    """Run `compose up -d` and watch every container until all are healthy (or one fails)."""
    with log.open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(stack.argv("up", "-d", "--no-build"), env=stack.env, cwd=stack.project.root,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    end = time.monotonic() + deadline_s
    shown: dict[str, str] = {}
    watches: dict[str, vllm_phases.PhaseWatch] = {}
    try:
        while True:
            containers = {service_of(c): c for c in stack.containers()}
            for service, container in containers.items():
                problem = _failed(container)
                if problem:
                    raise LaunchError(service, problem, _logs_hint(stack, service))
                status = health_of(container)
                if shown.get(service) != status:
                    click.echo(f"  {service}: {status}")
                    shown[service] = status
                if service.startswith("vllm") and status != "healthy":  # its phase, from its log
                    logs = stack.call("logs", "--no-color", "--tail", "300", service).stdout
                    watches.setdefault(service, vllm_phases.PhaseWatch(f"vLLM ({service})")).feed(logs)
            done = proc.poll()
            if done is not None and done != 0:
                raise LaunchError("docker compose up", f"exited with code {done}",
                                  f"see {log}:\n{_tail(log.read_text(errors='replace'))}")
            if done == 0 and all(health_of(containers.get(s, {})) == "healthy" for s in services):
                return
            if time.monotonic() > end:
                late = [s for s in services if health_of(containers.get(s, {})) != "healthy"]
                raise LaunchError(", ".join(late), f"not healthy after {deadline_s:.0f} s",
                                  "raise CONFGEN_START_TIMEOUT for a first run that downloads weights; "
                                  + _logs_hint(stack, late[0]))
            time.sleep(POLL_S)
    finally:
        _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """`compose up` may still wait on a dependency that will never be healthy: stop it, then kill it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _logs_hint(stack: Stack, service: str) -> str:
    logs = stack.call("logs", "--no-color", "--tail", "20", service)
    return f"last lines of its log (./runMe.sh logs {service}):\n{_tail(logs.stdout + logs.stderr, 20)}"


def compose_env(project: Project, environ: dict[str, str], deployment: Deployment) -> dict[str, str]:
    settings = deployment.selection.gvars.settings
    hf_cache = pull.cache_root(environ)
    hf_cache.mkdir(parents=True, exist_ok=True)  # else Docker creates it, owned by root
    env = {**environ, "CONFGEN_UID": str(os.getuid()), "CONFGEN_GID": str(os.getgid()),
           # The published port binds where LITELLM_HOST says (127.0.0.1 unless opened in vars.env).
           "LITELLM_PORT": str(settings.LITELLM_PORT), "GATEWAY_BIND": settings.LITELLM_HOST or "127.0.0.1",
           "HF_CACHE": str(hf_cache), "MODEL": deployment.names[0],
           "CONFGEN_VLLM_ARGS": deployment.vllm_args.get(deployment.names[0], "")}
    env.setdefault("DOCKER_BUILDKIT", "1")
    return env


def up(project: Project, environ: dict[str, str], names: list[str], source: str, deadline_s: float) -> int:
    run = RunDir.for_root(project.root, environ)
    existing = read_state(run)
    if existing is not None and not _stack_from_state(project, environ, existing).containers():
        (run.path / STATE).unlink()  # gone (a reboot, `docker compose down` by hand): start afresh
        existing = None
    if existing is not None:
        if existing.models == names:
            click.echo(f"already running: {', '.join(names)} at {existing.gateway} (./runMe.sh status | stop)")
            return 0
        raise LaunchError("runMe.sh", f"{', '.join(existing.models)} already runs in Docker at {existing.gateway}",
                          "./runMe.sh stop first, then start the other selection")
    selection = select(project, names, environ, source=source)
    info = host_mod.detect()
    gpu_models = [m.name for m in selection.models if m.info.device == "gpu"]
    if gpu_models and not info.gpu:
        raise ConfgenError.one(f"{source}={','.join(names)}", f"{', '.join(gpu_models)} need an NVIDIA GPU; this "
                               f"machine has none ({info.gpu_reason})", "run MODEL=tiny-cpu ./runMe.sh here")
    gpu = docker_host.gpu_profile(environ, info.gpu_reason) if gpu_models else None
    deployment = plan_deployment(selection, gpu, where=source)
    host = docker_host.detect(environ)
    if deployment.device == "gpu":
        docker_host.require_nvidia(host)
    for created in secret_files.ensure_generated(project):
        click.echo(f"created {project.rel(project.secrets_dir / created)} (mode 0600)")
    if _ensure_db_secret(project):
        click.echo(f"created {project.rel(project.secrets_dir / DB_SECRET)} (mode 0600)")
    secret_files.require(project, ("LITELLM_MASTER_KEY", "VLLM_API_KEY", DB_SECRET))
    settings = selection.gvars.settings
    ports.ensure_free(settings.LITELLM_HOST, settings.LITELLM_PORT, "gateway", "LITELLM_PORT")
    run.make()
    name = environ.get("COMPOSE_PROJECT_NAME") or DEFAULT_PROJECT
    stack = Stack(project, host, name, files_for(project, run, deployment, environ),
                  compose_env(project, environ, deployment))
    services = stack.call("config", "--services").stdout.split()
    gateway = f"http://{_reach(settings.LITELLM_HOST)}:{settings.LITELLM_PORT}"
    click.echo(f"deploying {', '.join(deployment.names)} with Docker ({deployment.device}"
               + (f", planned for {deployment.gpu}: " + ", ".join(f"{n} {a}" for n, a in deployment.vllm_args.items())
                  if deployment.gpu else "") + ")")
    if deployment.device == "gpu":  # the weights first, with progress, into the cache the container mounts
        pull.pull(project, list(selection.models), environ)
    _build(stack, run.logs / "docker-build.log")
    state = DockerState(name, [str(f) for f in stack.files], deployment.names, gateway,
                        datetime.now(UTC).isoformat(timespec="seconds"), list(host.compose))
    write_atomic(run.path / STATE, json.dumps(asdict(state), indent=2) + "\n")
    click.echo(f"starting {', '.join(services)} (log: {run.logs / 'docker-up.log'})")
    try:
        wait_up(stack, services, run.logs / "docker-up.log", deadline_s)
    except BaseException:
        click.echo("start-up failed: taking the stack down (docker compose down; the database volume stays)",
                   err=True)
        stack.down()
        (run.path / STATE).unlink(missing_ok=True)
        raise
    _print_ready(project, state, deployment)
    return 0


def _build(stack: Stack, log: Path) -> None:
    click.echo(f"building the images (first run pulls the vLLM base image, many GB; log: {log})")
    done = stack.call("build", timeout=7200)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise LaunchError("docker compose build", f"failed (exit {done.returncode})",
                          f"see {log}:\n{_tail(done.stdout + done.stderr)}")


def _print_ready(project: Project, state: DockerState, deployment: Deployment) -> None:
    key_file = project.rel(project.secrets_dir / "LITELLM_MASTER_KEY")
    served = ", ".join(m.served_name for m in deployment.selection.models)
    click.echo(f"""
ready: {served} behind the gateway at {state.gateway} (Docker, project {state.project})
  OpenAI base URL:     {state.gateway}/v1
  Anthropic base URL:  {state.gateway}   (ANTHROPIC_BASE_URL; ANTHROPIC_AUTH_TOKEN = the key)
  master key:          {key_file}
  ./runMe.sh status | logs [service] | stop""")


def _stack_from_state(project: Project, environ: dict[str, str], state: DockerState) -> Stack:
    host = DockerHost(docker_host.find_docker(environ), tuple(state.compose) or ("docker", "compose"), ())
    return Stack(project, host, state.project, [Path(f) for f in state.files], {**environ})


def stop(project: Project, environ: dict[str, str], state: DockerState) -> int:
    stack = _stack_from_state(project, environ, state)
    done = stack.call("down", "--remove-orphans", timeout=180)
    if done.returncode != 0:
        raise LaunchError("docker compose down", first(done), "run it by hand: docker compose -p "
                          f"{state.project} down")
    (RunDir.for_root(project.root, environ).path / STATE).unlink(missing_ok=True)
    click.echo(f"stopped the Docker deployment {state.project} ({', '.join(state.models)})")
    return 0


def first(done: subprocess.CompletedProcess[str]) -> str:
    return docker_host.first_line(done.stderr or done.stdout)


def status(project: Project, environ: dict[str, str], state: DockerState) -> int:
    stack = _stack_from_state(project, environ, state)
    containers = stack.containers()
    click.echo(f"Docker deployment {state.project}: {', '.join(state.models)}, started {state.started_at}, "
               f"gateway {state.gateway}")
    healthy = bool(containers)
    for container in sorted(containers, key=service_of):
        label = health_of(container)
        healthy &= label == "healthy"
        click.echo(f"  {service_of(container):24} {label:10} {container.get('Name', '').lstrip('/')}")
    return 0 if healthy else 3


def logs(project: Project, environ: dict[str, str], state: DockerState, part: str | None, lines: int) -> int:
    stack = _stack_from_state(project, environ, state)
    done = stack.call("logs", "--no-color", "--tail", str(lines), *([part] if part else []))
    click.echo(done.stdout + done.stderr, nl=False)
    return 0 if done.returncode == 0 else 1
