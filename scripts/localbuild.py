"""Shared by the scripts that build a model's weights into .local/models/ (build_tiny_model.py,
build_smollm2.py; the catalog names them in `info.build`): the command line, the checks before a build,
and the build into a temporary folder next to the target whose files are moved in at the end.

A builder runs with the vLLM venv's Python (torch, transformers); confgen calls it as
`python SCRIPT --out DIR [--force]` (confgen/runtime/stack.py, ensure_local_weights).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def is_complete(folder: Path, required: Sequence[str]) -> bool:
    return all((folder / name).is_file() for name in required)


def fail(prog: str, message: str, code: int = 1) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_into(out: Path, write: Callable[[Path], None]) -> float:
    """`write(tmp)` into a temporary folder next to `out`, then move its files in; returns MB written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        out.mkdir(exist_ok=True)
        mode = 0o666 & ~_umask()
        size = 0
        for item in sorted(tmp.iterdir()):
            item.chmod(mode)  # some files are written through private temp files (0600)
            size += item.stat().st_size
            os.replace(item, out / item.name)
        return size / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None, *, prog: str, what: str, default_out: Path, required: Sequence[str],
         write: Callable[[Path], None], imports: Sequence[str] = ("torch", "transformers")) -> int:
    """The builders' command line: --out DIR (default `default_out`), --force; `what` names the model."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Build {what} into a folder vLLM serves.")
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"folder to write (default: {default_out.relative_to(PROJECT_ROOT)} "
                             "under the project root)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    args = parser.parse_args(argv)
    out: Path = args.out.expanduser().absolute()

    if out.exists() and not out.is_dir():
        return fail(prog, f"{out} exists and is not a folder", 2)
    if is_complete(out, required) and not args.force:
        print(f"{what} already exists in {out} (use --force to rebuild)")
        return 0
    foreign = out.is_dir() and any(out.iterdir()) and not (out / "config.json").exists()
    if foreign and not args.force:
        return fail(prog, f"{out} is not empty and holds no model; pick another --out or pass --force", 2)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in imports:
        try:
            __import__(name)
        except ImportError as exc:
            return fail(prog, f"{exc.name or exc} is not installed in {sys.executable}; run this script "
                              f"with the vLLM venv's Python: .venv-vllm/bin/python scripts/{prog}.py")

    start = time.monotonic()
    try:
        size_mb = build_into(out, write)
    except OSError as exc:
        return fail(prog, f"cannot write {out}: {exc.strerror or exc}")
    print(f"built {what} in {out} ({size_mb:.1f} MB, {time.monotonic() - start:.1f} s)")
    return 0
