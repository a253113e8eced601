"""The one path from MODEL to a running vLLM, shared by the container and the local stack:
MODEL -> secrets -> generated configs (models.yml, config.yaml) -> exec vLLM with dynamic arguments.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from confgen.catalog import select
from confgen.errors import LaunchError
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.render import write_all
from confgen.runtime import secret_files


@dataclass(frozen=True)
class Launch:
    model: ResolvedModel
    argv: list[str]
    env: dict[str, str]


def prepare(project: Project, name: str, out: Path, environ: dict[str, str]) -> Launch:
    """Validate MODEL, render the shared configs into `out`, and build vLLM's argv and env."""
    selection = select(project, [name], environ, source="MODEL")
    model = selection.models[0]
    secrets = secret_files.require(project, ("VLLM_API_KEY",))
    secrets |= secret_files.optional(project, ("HF_TOKEN",))
    write_all(selection, out)
    # vLLM reads VLLM_API_KEY itself, so the key never appears in argv (visible in `ps`).
    env = {**environ, **model.env, **secrets}
    return Launch(model=model, argv=model.argv, env=env)


def vllm_executable(environ: dict[str, str]) -> str:
    """`vllm` next to this interpreter first (the project venv), then on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    found = shutil.which("vllm", path=search)
    if found is None:
        raise LaunchError("vllm", "the vllm command is not installed in this environment",
                          "run ./runMe.sh (it installs the CPU build) or use the vLLM container image")
    return found


def exec_vllm(launch: Launch) -> None:
    exe = vllm_executable(launch.env)
    sys.stdout.write(f"confgen: starting {launch.model.name}: {' '.join(launch.argv)}\n")
    sys.stdout.flush()
    os.execve(exe, launch.argv, launch.env)  # noqa: S606 - argv is a list, no shell
