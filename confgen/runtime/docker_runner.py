"""The Runner interface (confgen/runtime/runner.py) over Docker containers: how the on-demand controller owns the
model servers of a GPU host. One container per server, named `<prefix>-<server>` and labelled with the prefix,
on the host network (the model server binds 127.0.0.1 as on the CPU stack), started with `--init` (a Python
PID 1 makes `docker stop` wait out its grace time otherwise). Its log is followed into the server's log file,
so the controller reads a failed start's reason the same way for both runners.

It talks to the daemon with the docker client, as the compose deployment does (confgen/runtime/docker_host.py:
the client, its timeouts and its errors). Environment values go by name (`-e NAME`, the client passes its own
value): a secret never appears on a command line. What having the Docker API grants: docs/on-demand.md.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confgen.errors import LaunchError
from confgen.merge import ResolvedModel
from confgen.runtime import docker_host
from confgen.runtime.rundir import RunDir
from confgen.runtime.runner import ServerSpec, Status, http_ok, tail

LABEL = "io.confgen.controller"
POLL_S = 0.5


@dataclass(frozen=True)
class Container:
    """What a server needs beyond its command to run in a container."""

    image: str
    mounts: tuple[str, ...] = ()  # docker run -v values: "/host/path:/path[:ro]"
    gpus: str | None = None  # docker run --gpus: "all", "device=0" (the NVIDIA Container Toolkit)
    user: str | None = None  # "uid:gid"; None: the image's user
    workdir: str | None = None
    ipc: str | None = None  # docker run --ipc: "host" for vLLM's shared-memory IPC (docker-compose.yml)


@dataclass(frozen=True)
class ContainerHandle:
    name: str  # the container's name
    url: str
    log: str


@dataclass
class DockerRunner:
    docker: str  # the docker client (docker_host.find_docker)
    env: dict[str, str]  # the client's environment (DOCKER_HOST, DOCKER_CONFIG, ...)
    prefix: str = "confgen"
    containers: dict[str, Container] = field(default_factory=dict)  # server name -> its container
    _followers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return docker_host.run([self.docker, *args], env or self.env)

    def start(self, spec: ServerSpec) -> ContainerHandle:
        container = self.containers.get(spec.name)
        if container is None:
            raise LaunchError(spec.label or spec.name, "no container is declared for this server",
                              "declare one in DockerRunner.containers, keyed by the server's name")
        name = f"{self.prefix}-{spec.name}"
        self._run("rm", "-f", name)  # one left by a controller that did not stop it (killed, a reboot)
        argv = ["run", "-d", "--name", name, "--label", f"{LABEL}={self.prefix}", "--network", "host", "--init",
                *(arg for key in sorted(spec.env) for arg in ("-e", key)),
                *(arg for mount in container.mounts for arg in ("-v", mount)),
                *(["--gpus", container.gpus] if container.gpus else []),
                *(["--user", container.user] if container.user else []),
                *(["-w", container.workdir] if container.workdir else []),
                *(["--ipc", container.ipc] if container.ipc else []), container.image, *spec.argv]
        done = self._run(*argv, env={**self.env, **spec.env})
        if done.returncode != 0:
            raise LaunchError(spec.label or spec.name, f"docker run failed: {docker_host.first_line(done.stderr)}",
                              f"check the image {container.image} (docker image ls) and the daemon (docker info)")
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with spec.log.open("ab") as out:  # ends by itself when the container is removed
            self._followers[name] = subprocess.Popen([self.docker, "logs", "-f", name], env=self.env, stdout=out,
                                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return ContainerHandle(name, spec.url, str(spec.log))

    def stop(self, handles: Sequence[ContainerHandle], grace_s: float = 15.0) -> list[str]:
        """docker stop (SIGTERM, SIGKILL after the grace time), then remove; the last started first."""
        names = [h.name for h in reversed(handles)]
        if not names:
            return []
        self._run("stop", "-t", str(max(1, round(grace_s))), *names)
        self._run("rm", "-f", *names)
        for name in names:
            follower = self._followers.pop(name, None)
            if follower is not None:
                _end(follower)
        return names

    def _state(self, handle: ContainerHandle) -> tuple[Status, int | None]:
        done = self._run("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", handle.name)
        running, _, code = done.stdout.strip().partition(" ")
        if done.returncode != 0:  # removed
            return "exited", None
        return ("running", None) if running == "true" else ("exited", int(code) if code.isdigit() else None)

    def status(self, handle: ContainerHandle) -> Status:
        return self._state(handle)[0]

    def exit_code(self, handle: ContainerHandle) -> int | None:
        status, code = self._state(handle)
        follower = self._followers.pop(handle.name, None)
        if status == "exited" and follower is not None:
            _end(follower)  # the log is complete once `docker logs -f` has seen the container end
        elif follower is not None:
            self._followers[handle.name] = follower
        return code

    def health(self, handle: ContainerHandle, path: str = "/health") -> bool:
        return self.status(handle) == "running" and http_ok(handle.url + path)

    def wait_healthy(self, handle: ContainerHandle, deadline_s: float, path: str = "/health",
                     progress: Callable[[], None] | None = None) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            status, code = self._state(handle)
            if status == "exited":
                raise LaunchError(handle.name, f"exited with code {code} during start-up",
                                  f"see {handle.log}:\n{tail(Path(handle.log), 15)}")
            if progress is not None:
                progress()
            if http_ok(handle.url + path):
                return
            time.sleep(POLL_S)
        raise LaunchError(handle.name, f"not healthy after {deadline_s:.0f} s",
                          f"see {handle.log}:\n{tail(Path(handle.log), 15)}")

    def remove_all(self) -> list[str]:
        """Every container with this runner's label (a controller's leftovers): removed."""
        ids = self._run("ps", "-aq", "--filter", f"label={LABEL}={self.prefix}").stdout.split()
        if ids:
            self._run("rm", "-f", *ids)
        return ids


def _end(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=5)


def host_user() -> str:
    """This process's uid:gid, so files a container writes in mounted folders are the user's (as compose's
    CONFGEN_UID/CONFGEN_GID, confgen/runtime/docker.py)."""
    return f"{os.getuid()}:{os.getgid()}"


def vllm_container(root: Path, run: RunDir, model: ResolvedModel, *, image: str, hf_cache: Path,
                   vllm_args: str = "", routes: Sequence[str] = ()) -> tuple[ServerSpec, Container]:
    """`model` in the vLLM node image, as docker-compose.yml's vllm-node runs it (the entrypoint, the same
    mounts, the host user, --ipc host, every GPU), but on the host network at the model's own port, so the
    controller starts and stops it alone. `vllm_args` replace the model file's flags (the planner's share)."""
    generated = run.generated / "containers" / model.name  # the entrypoint writes its configs here
    generated.mkdir(parents=True, exist_ok=True)
    mounts = (f"{root / 'models'}:/app/models:ro", f"{root / 'secrets'}:/app/secrets:ro",
              f"{root / 'scripts'}:/app/scripts:ro", f"{root / 'vars.env'}:/app/vars.env:ro",
              f"{hf_cache}:/home/app/.cache/huggingface", f"{generated}:/app/generated_configs")
    env = {"MODEL": model.name, "VLLM_HOST": "127.0.0.1", "CONFGEN_VLLM_ARGS": vllm_args,
           "HF_HOME": "/home/app/.cache/huggingface"}
    spec = ServerSpec(f"vllm-{model.name}", [arg for route in routes for arg in ("--route", route)], env, root,
                      run.logs / f"vllm-{model.name}.log", f"http://127.0.0.1:{model.port}",
                      label=f"vLLM ({model.name})")
    return spec, Container(image, mounts, gpus="all" if model.info.device == "gpu" else None, user=host_user(),
                           ipc="host")
