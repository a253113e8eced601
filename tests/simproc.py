"""Start the vLLM-API simulator (`python -m confgen.sim`) as a real subprocess, for tests.

    from tests.simproc import running_sim

    with running_sim(15100, "--served-model-name", "m", "--ttft-ms", "5") as sim:
        httpx.post(f"{sim.url}/v1/chat/completions", json={...})   # sim.url = http://127.0.0.1:15100
        sim.set_faults(error_rate=0.5)          # POST /sim/faults: flip faults while it runs
        sim.stats()["by_status"]                # GET /sim/stats: {"requests", "by_status": {"200": n}, ...}
        sim.stats()["by_kind"]                  # which API was called: {"chat": n, "responses": n, ...}
        sim.reset_stats()

`running_sim` refuses a port already in use, waits (at most `ready_timeout` seconds) until `/health`
answers at all (200, or 503 while a `--slow-start-s` runs), and on exit sends SIGTERM (then SIGKILL after
5 s). Flags are the simulator's own (`python -m confgen.sim --help`); `host` is 127.0.0.1 unless given (another
loopback address such as 127.0.0.2 stands for another machine).
Pass `env={"VLLM_API_KEY": ...}` to set the key through the environment. The simulator's output goes to
`sim.log` (a file in a temporary folder), shown in the error when it does not start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SimProc:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change faults at run time (error_rate, error_status, hang, slow_start_s, drop_after_chunks)."""
        response = httpx.post(f"{self.url}/sim/faults", json=faults, timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/sim/stats", timeout=5).json()
        return result

    def reset_stats(self) -> None:
        httpx.post(f"{self.url}/sim/stats/reset", timeout=5).raise_for_status()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


@contextmanager
def running_sim(port: int, *args: str, env: dict[str, str] | None = None,
                ready_timeout: float = 20.0, host: str = "127.0.0.1") -> Iterator[SimProc]:
    if not port_is_free(port, host):
        raise RuntimeError(f"port {port} on {host} is already in use; pick another for the simulator")
    folder = Path(tempfile.mkdtemp(prefix=f"sim-{port}-"))
    log = folder / "sim.log"
    argv = [sys.executable, "-m", "confgen.sim", "--host", host, "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, **(env or {})})
    sim = SimProc(port, process, log, host)
    try:
        _wait_ready(sim, ready_timeout)
        yield sim
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_ready(sim: SimProc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sim.process.poll() is not None:
            raise RuntimeError(f"the simulator exited with {sim.process.returncode}:\n{sim.log.read_text()}")
        try:
            httpx.get(f"{sim.url}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"the simulator did not answer /health within {timeout} s:\n{sim.log.read_text()}")
