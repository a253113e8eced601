"""Can this host run the Docker deployment? Docker, its daemon, Compose, the NVIDIA Container Toolkit,
and which GPU profile the planner should use. Each refusal says what is missing and what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confgen.errors import ConfgenError, LaunchError

TIMEOUT_S = 30
INSTALL_DOCKER = "install Docker Engine with the Compose plugin (https://docs.docker.com/engine/install/)"
INSTALL_TOOLKIT = ("install the NVIDIA Container Toolkit (https://docs.nvidia.com/datacenter/cloud-native/"
                   "container-toolkit/latest/install-guide.html), then `sudo nvidia-ctk runtime configure "
                   "--runtime=docker && sudo systemctl restart docker`")
CDI_SPECS = (Path("/etc/cdi/nvidia.yaml"), Path("/var/run/cdi/nvidia.yaml"))
# nvidia-smi's device name -> the planner's GPU profile (confgen/gpus/).
GPU_NAMES = (("GB10", "dgx-spark"), ("H200", "h200-141gb"), ("H100", "h100-80gb"), ("A100", "a100-80gb"),
             ("L40S", "l40s-48gb"), ("RTX 6000 Ada", "rtx-6000-ada-48gb"), ("4090", "rtx-4090-24gb"))


@dataclass(frozen=True)
class DockerHost:
    docker: str
    compose: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    runtimes: tuple[str, ...]


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = TIMEOUT_S,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LaunchError(argv[0], "not found", INSTALL_DOCKER) from None
    except subprocess.TimeoutExpired:
        raise LaunchError(" ".join(argv[:3]), f"did not answer within {timeout:.0f} s",
                          "check that the Docker daemon is running and responsive (docker info)") from None


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def find_docker(environ: dict[str, str]) -> str:
    wanted = environ.get("CONFGEN_DOCKER") or "docker"
    found = shutil.which(wanted, path=environ.get("PATH"))
    if found is None:
        raise LaunchError("docker", f"Docker is not installed ({wanted!r} is not on PATH)",
                          f"{INSTALL_DOCKER}; or run a CPU model without Docker: MODEL=tiny-cpu ./runMe.sh")
    return found


def daemon_info(docker: str, env: dict[str, str]) -> dict[str, Any]:
    out = run([docker, "info", "--format", "{{json .}}"], env)
    if out.returncode != 0:
        raise LaunchError("docker info", f"cannot reach the Docker daemon: {first_line(out.stderr or out.stdout)}",
                          "start it (sudo systemctl start docker) and make sure you may use it "
                          "(sudo usermod -aG docker $USER, then log in again)")
    try:
        info = json.loads(out.stdout)
    except ValueError:
        raise LaunchError("docker info", "answered something that is not JSON", "check the docker client") from None
    if not isinstance(info, dict):
        raise LaunchError("docker info", "answered something unexpected", "check the docker client")
    return info


def find_compose(docker: str, env: dict[str, str]) -> tuple[str, ...]:
    """Compose v2 (the `docker compose` plugin) first, then the standalone v1 `docker-compose`."""
    if run([docker, "compose", "version"], env).returncode == 0:
        return (docker, "compose")
    legacy = shutil.which("docker-compose", path=env.get("PATH"))
    if legacy and run([legacy, "version"], env).returncode == 0:
        return (legacy,)
    raise LaunchError("docker compose", "Docker Compose is not installed",
                      "install the Compose plugin (Debian/Ubuntu: apt-get install docker-compose-plugin)")


def detect(environ: dict[str, str]) -> DockerHost:
    docker = find_docker(environ)
    info = daemon_info(docker, environ)
    runtimes = info.get("Runtimes") or {}
    return DockerHost(docker, find_compose(docker, environ), tuple(sorted(runtimes)))


def require_nvidia(host: DockerHost) -> None:
    """A GPU reservation needs the NVIDIA Container Toolkit; without it `up` fails half-way."""
    if "nvidia" in host.runtimes or any(p.exists() for p in CDI_SPECS):
        return
    if shutil.which("nvidia-container-runtime-hook"):
        return
    raise LaunchError("docker", f"the NVIDIA container runtime is not set up (docker info lists the runtimes "
                      f"{', '.join(host.runtimes) or 'none'}; no nvidia-container-runtime-hook, no CDI spec)",
                      INSTALL_TOOLKIT)


def gpu_profile(environ: dict[str, str], gpu_reason: str) -> str:
    """CONFGEN_GPU, else the profile of the GPU nvidia-smi names."""
    if environ.get("CONFGEN_GPU"):
        return environ["CONFGEN_GPU"]
    for needle, profile in GPU_NAMES:
        if needle.lower() in gpu_reason.lower():
            return profile
    raise ConfgenError.one("CONFGEN_GPU", f"no GPU profile matches this GPU ({gpu_reason})",
                           "set CONFGEN_GPU to a profile from `confgen plan --list-gpus`, or add your own as "
                           "gpus/<name>.yml")
