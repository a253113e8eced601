"""One runner interface for the servers of a stack (vLLM, the gateway, Prometheus, the controller): start,
stop, status and health of one server. LocalRunner runs local processes (the CPU stack); DockerRunner
(confgen/runtime/docker_runner.py) implements the same protocol with a container as its handle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import click
import httpx
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from confgen.errors import LaunchError
from confgen.merge import ResolvedModel
from confgen.runtime.rundir import Proc, RunDir, alive, ours, start_time

H = TypeVar("H")
Status = Literal["running", "exited"]


@dataclass(frozen=True)
class ServerSpec:
    """What to run: a name, the command and its environment, where it logs and where it answers."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    url: str  # its base URL, e.g. http://127.0.0.1:8000
    health_path: str = "/health"
    label: str = ""  # how errors name it, e.g. "vLLM (tiny-cpu)" (default: name)


class Runner(Protocol[H]):
    def start(self, spec: ServerSpec) -> H: ...
    def stop(self, handles: Sequence[H], grace_s: float = 15.0) -> list[str]: ...
    def status(self, handle: H) -> Status: ...
    def exit_code(self, handle: H) -> int | None: ...
    def health(self, handle: H, path: str = "/health") -> bool: ...
    def wait_healthy(self, handle: H, deadline_s: float, path: str = "/health") -> None: ...


@dataclass
class LocalRunner:
    """Local processes, each in its own session (it outlives runMe.sh; stop signals the whole group)."""

    children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)

    def start(self, spec: ServerSpec) -> Proc:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        with spec.log.open("ab") as out:
            child = subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.children[child.pid] = child
        self.labels[child.pid] = spec.label or spec.name
        return Proc.spawned(spec.name, child.pid, str(spec.log), spec.url)

    def stop(self, handles: Sequence[Proc], grace_s: float = 15.0) -> list[str]:
        stopped = stop_procs(list(handles), grace_s)
        for proc in handles:
            child = self.children.pop(proc.pid, None)
            if child is not None:
                child.poll()
        return stopped

    def status(self, handle: Proc) -> Status:
        child = self.children.get(handle.pid)
        if child is not None:
            return "running" if child.poll() is None else "exited"
        return "running" if ours(handle) else "exited"

    def exit_code(self, handle: Proc) -> int | None:
        child = self.children.get(handle.pid)
        return None if child is None else child.poll()

    def health(self, handle: Proc, path: str = "/health") -> bool:
        return self.status(handle) == "running" and http_ok(handle.url + path)

    def wait_healthy(self, handle: Proc, deadline_s: float, path: str = "/health",
                     progress: Callable[[], None] | None = None) -> None:
        """Only for a server this runner started (it waits on the child to see it exit). `progress` runs at each
        poll (vLLM's phases: runtime/vllm_phases.py)."""
        wait_healthy(self.labels[handle.pid], self.children[handle.pid], Path(handle.log),
                     lambda: http_ok(handle.url + path), deadline_s, progress=progress)


def vllm_server(root: Path, run: RunDir, model: ResolvedModel, *, python: Path, environ: dict[str, str],
                name: str = "vllm", routes: Sequence[str] = ()) -> ServerSpec:
    """The CPU stack's vLLM for `model`, started through the shared entrypoint (`confgen exec-vllm`), which
    renders the gateway config again: `routes` are the models it routes to when there are several."""
    env = {**environ, "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(run.scratch / "tmp"),
           "VLLM_CACHE_ROOT": str(run.scratch / "cache" / "vllm"), "PYTHONUNBUFFERED": "1"}
    # vLLM would read the gateway's metric files from it and serve them as its own.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [str(python), "-m", "confgen", "--root", str(root), "exec-vllm", "--model", model.name,
            "--out", str(run.generated), *(arg for route in routes for arg in ("--route", route))]
    return ServerSpec(name, argv, env, root, run.logs / f"vllm-{model.name}.log",
                      f"http://{reach(model.host)}:{model.port}")


def reach(host: str) -> str:
    """Where a client reaches a server bound to `host`: a wildcard bind is reached on loopback."""
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(part: str, proc: subprocess.Popen[bytes], log: Path, check: Callable[[], bool],
                 deadline_s: float, *, progress: Callable[[], None] | None = None) -> None:
    """Poll `check` until it passes; fail at once if the process dies, or at the deadline."""

    def probe() -> bool:
        if proc.poll() is not None:
            raise LaunchError(part, f"exited with code {proc.returncode} during start-up",
                              f"see {log}:\n{tail(log, 15)}")
        if progress is not None:
            progress()
        return check()

    try:
        Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.5),
                 retry=retry_if_result(lambda ok: not ok), reraise=True)(probe)
    except RetryError:
        raise LaunchError(part, f"not healthy after {deadline_s:.0f} s", f"see {log}:\n{tail(log, 15)}") from None


def tail(log: Path, lines: int) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def stop_procs(procs: list[Proc], grace_s: float = 15.0) -> list[str]:
    """SIGTERM each process group (the last started first), then SIGKILL what is left after the grace time; a
    pid that is no longer the process we started (its start time differs) is never signalled."""
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
