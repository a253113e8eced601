"""Validate each model's `vllm serve` command with vLLM's own argument parser.

vLLM is not a dependency of confgen (it lives in its own venv or image), so the check runs
confgen/vllm_probe.py inside a Python that has vLLM, found in this order:

1. the environment variable CONFGEN_VLLM_PYTHON (a path to that python);
2. <project>/.venv-vllm/bin/python (the CPU build confgen installs for local runs);
3. this interpreter, if it can import vllm.

Without any of them the check is skipped, and the summary says so and how to enable it.
The probe parses every command as `vllm serve` would, runs vLLM's post-parse checks and compares
the values argparse lets through (tool/reasoning parsers, attention backend, load format) with
vLLM's registries. Which vLLM ran the check matters: the catalog targets vLLM 0.16 on the DGX
Spark, the local CPU build is 0.32, and the two accept different flags; every problem says which
version reported it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confgen.errors import Problem
from confgen.load import Project
from confgen.merge import ResolvedModel

PYTHON_ENV = "CONFGEN_VLLM_PYTHON"
DEFAULT_TIMEOUT = 180.0  # importing vLLM (and torch) takes ~5 s here; slow disks take longer
PROBE = Path(__file__).with_name("vllm_probe.py")
WHERE = "vLLM check"

# Runs the probe by path, without the working folder on sys.path (nothing there may shadow
# vLLM's imports), in any Python that has vLLM, whether or not confgen is installed in it.
_RUN_PROBE = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"

# Flags that vLLM 0.16 (the DGX Spark image) parses but newer vLLM rejects.
_GONE_AFTER_0_16 = {
    "--swap-space": "CPU swap space for preempted requests is gone from newer vLLM",
    "--disable-log-requests":
        "request logging is off by default; --enable-log-requests turns it on",
}


@dataclass
class VllmReport:
    summary: str
    problems: list[Problem] = field(default_factory=list)


def find_vllm_python(project: Project) -> tuple[Path | None, str]:
    """The python to run the probe with, or None and why not (a sentence)."""
    configured = os.environ.get(PYTHON_ENV, "").strip()
    if configured:
        return Path(configured).expanduser(), f"${PYTHON_ENV}"
    venv_python = project.root / ".venv-vllm" / "bin" / "python"
    if venv_python.exists():
        return venv_python, project.rel(venv_python)
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable), "this interpreter"
    return None, (
        f"no vLLM found (not in ${PYTHON_ENV}, {project.rel(venv_python)} or this Python); "
        f"run `confgen install` (the CPU build of vLLM into .venv-vllm) or set {PYTHON_ENV} "
        "to the python of a venv with vLLM to enable it"
    )


def check_commands(
    project: Project, models: Sequence[ResolvedModel], timeout: float = DEFAULT_TIMEOUT
) -> VllmReport:
    """Parse every model's final `vllm serve` argv with vLLM; problems are per model file."""
    if not models:
        return VllmReport(summary="vLLM argument check: no commands to check")
    python, origin = find_vllm_python(project)
    if python is None:
        return VllmReport(summary=f"vLLM argument check skipped: {origin}")
    if not (python.is_file() and os.access(python, os.X_OK)):
        return _failed(f"{python} (from {origin}) is not an executable file",
                       f"point {PYTHON_ENV} at the python of a venv with vLLM, or unset it")

    request = {"models": {m.name: m.argv[2:] for m in models}}
    try:
        proc = subprocess.run(
            [str(python), "-c", _RUN_PROBE, str(PROBE)],
            input=json.dumps(request), capture_output=True, text=True, timeout=timeout,
            cwd=project.root, env=_probe_env(), check=False,
        )
    except subprocess.TimeoutExpired:
        return _failed(f"{python} did not finish checking within {timeout:.0f} s",
                       "run `confgen check --no-vllm` to skip this check, or try again")
    except OSError as exc:
        return _failed(f"cannot run {python}: {exc.strerror or exc}",
                       f"point {PYTHON_ENV} at the python of a venv with vLLM, or unset it")

    answer = _parse_answer(proc.stdout)
    if answer is None or "error" in answer:
        reason = str(answer["error"]) if answer else _tail(proc.stderr or proc.stdout)
        return _failed(f"{python} could not check the commands (exit {proc.returncode}): {reason}",
                       f"repair that vLLM install, point {PYTHON_ENV} at another one, "
                       "or run `confgen check --no-vllm`")
    return _report(models, answer)


def _probe_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    env.setdefault("HF_HUB_OFFLINE", "1")  # parsing needs no network; never let it try
    return env


def _parse_answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        return data if isinstance(data, dict) else None
    return None


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) or "no output"


def _failed(what: str, fix: str) -> VllmReport:
    return VllmReport(summary="vLLM argument check failed to run",
                      problems=[Problem(WHERE, what, fix)])


def _report(models: Sequence[ResolvedModel], answer: dict[str, Any]) -> VllmReport:
    version = str(answer.get("vllm_version", "unknown"))
    results = answer.get("results")
    results = results if isinstance(results, dict) else {}
    problems: list[Problem] = []
    rejected = 0
    for m in models:
        found = results.get(m.name)
        if not isinstance(found, list):
            problems.append(Problem(f"{m.file}: command",
                                    f"vLLM {version} returned no result for it",
                                    "report this as a confgen bug"))
            continue
        items = [item for item in found if isinstance(item, dict)]
        rejected += bool(items)
        problems += [_problem(m, item, version) for item in items]

    seconds = answer.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    n = len(models)
    noun = "command" if n == 1 else "commands"
    if rejected:
        summary = f"vLLM {version} parser checked {n} {noun}{took}: {rejected} rejected"
    else:
        summary = f"vLLM {version} parser accepted {n} {noun}{took}"
    notes = [str(x) for x in answer.get("notes") or [] if x]
    if notes:
        summary += f" ({'; '.join(notes)})"
    return VllmReport(summary=summary, problems=problems)


def _problem(m: ResolvedModel, item: dict[str, Any], version: str) -> Problem:
    flag = str(item.get("flag") or "")
    what = str(item.get("what") or "rejected")
    fix = str(item.get("fix") or "")
    gone = _GONE_AFTER_0_16.get(flag)
    if gone and what.startswith("unrecognized flag"):
        fix = (f"remove it: {gone}. vLLM 0.16, the DGX Spark image, still accepts it, but this "
               f"check used vLLM {version}, which rejects it")
    elif not fix:
        fix = f"checked with vLLM {version}"
    elif fix.endswith(("?", ".")):
        fix = f"{fix} Checked with vLLM {version}"
    else:
        fix = f"{fix}; checked with vLLM {version}"
    text = what if not flag or what.startswith(flag) else f"{flag}: {what}"
    return Problem(f"{m.file}: command", text, fix)
