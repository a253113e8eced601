"""Shared by the scripts/bench_*.py benchmarks: the machine line and their section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_HEADER = "# Benchmarks\n\nRerun the scripts named in each section.\n"


def machine() -> str:
    """Architecture, cores, CPU model, memory and Python, for the report."""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "unknown CPU")
    except OSError:
        cpu = "unknown CPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def write_section(title: str, text: str, bench: Path = BENCHMARKS) -> None:
    """Replace the section headed `title` where it is (append it the first time); other sections stay."""
    existing = bench.read_text() if bench.exists() else _HEADER
    if title in existing:
        head, _, rest = existing.partition(title)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt != -1 else ""
        bench.write_text(head + text.rstrip() + "\n" + ("\n" + tail if tail else ""))
        return
    bench.parent.mkdir(exist_ok=True)
    bench.write_text(existing.rstrip() + "\n\n" + text)
