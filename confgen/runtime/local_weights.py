"""Weights built on this machine: a model served from .local/models/ is built by the script its file names
(`info.build`), once, and again when that script changes (its hash is kept next to the weights).

The builder runs with the vLLM venv's python (torch, transformers) and its output (steps, progress bars)
goes both to the terminal and to the log: SmolLM2's build takes a while on 2 cores.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import IO, cast

import click

from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project
from confgen.merge import ResolvedModel

LOCAL_MODELS = ".local/models/"
STAMP = ".confgen-build"  # sha256 of the build script that wrote the weights


def is_local(model: ResolvedModel) -> bool:
    return model.hf_id.startswith(LOCAL_MODELS)


def build_script(project: Project, model: ResolvedModel) -> Path:
    """The model's builder; a local model without one is an error in its file."""
    if model.info.build is None:
        raise ConfgenError.one(f"{model.file}: info.build", f"{model.hf_id} is built on this machine, but no "
                               "script builds it", "name its builder, e.g. `build: scripts/build_tiny_model.py`")
    script = project.root / model.info.build
    if not script.is_file():
        raise ConfgenError.one(f"{model.file}: info.build", f"{model.info.build} does not exist",
                               "name a script under scripts/ that builds the weights")
    return script


def recipe(script: Path) -> str:
    return hashlib.sha256(script.read_bytes()).hexdigest()


def is_current(target: Path, script: Path) -> bool:
    stamp = target / STAMP
    return (target / "config.json").is_file() and stamp.is_file() and stamp.read_text().strip() == recipe(script)


def ensure(project: Project, model: ResolvedModel, python: Path, log: Path) -> None:
    """Build the model's weights if they are missing or were built by another version of its script."""
    if not is_local(model):
        return
    script = build_script(project, model)
    target = project.root / model.hf_id
    if is_current(target, script):
        return
    click.echo(f"building the local model {model.hf_id} with {project.rel(script)} (log: {log})")
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(python), str(script), "--out", str(target), "--force"]
    if _run_shown(argv, log, project.root):
        raise LaunchError(f"build of {model.hf_id}", "failed", f"see {log}")
    (target / STAMP).write_text(recipe(script) + "\n", encoding="utf-8")


def _run_shown(argv: list[str], log: Path, cwd: Path) -> int:
    """Run argv with its output on the terminal and appended to `log`; its exit code."""
    with log.open("ab") as out, subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL) as proc:
        stdout = cast(IO[bytes], proc.stdout)  # stdout=PIPE
        # Chunks, not lines: progress bars redraw their line with \r.
        for chunk in iter(lambda: stdout.read1(4096), b""):  # type: ignore[attr-defined]
            out.write(chunk)
            click.echo(chunk, nl=False)
        return proc.wait()
