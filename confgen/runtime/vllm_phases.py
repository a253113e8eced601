"""What a starting vLLM is doing, read from its log, so the wait for its health is not silent.

The lines are vLLM's own (0.32 source, the same wording in 0.16): v1/engine/core.py "Initializing a V1 LLM
engine", cpu_model_runner.py / gpu_model_runner.py
"Starting to load model", weight_utils.py "Loading safetensors checkpoint shards: N% Completed | i/n",
default_loader.py "Loading weights took", compilation/backends.py "Dynamo bytecode transform time",
gpu_worker.py "Available KV cache memory", cpu_worker.py "Explicitly set ... for KV cache",
kv_cache_utils.py "<device> KV cache size", gpu_model_runner.py "Capturing CUDA graphs" and
"Graph capturing finished", entrypoints/.../entry.py "Starting vLLM server on".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

# In the order vLLM goes through them; a later phase never gives way to an earlier one.
PHASES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("starting the engine", re.compile(r"Initializing a V1 LLM engine")),
    ("loading weights", re.compile(r"Starting to load model|Loading safetensors checkpoint shards")),
    ("compiling the model (torch.compile)", re.compile(r"Dynamo bytecode transform time|Compiling a graph for")),
    ("allocating the KV cache", re.compile(r"Available KV cache memory|for KV cache on node|KV cache size: ")),
    ("capturing CUDA graphs", re.compile(r"Capturing CUDA graphs")),
    ("starting the API server", re.compile(r"init engine \(profile, create kv cache|Graph capturing finished")),
    ("answering health checks", re.compile(r"Starting vLLM server on")),
)
SHARDS = re.compile(r"Loading safetensors checkpoint shards:\s+(\d+)% Completed \| (\d+)/(\d+)")
HEARTBEAT_S = 30.0  # say it again when a phase lasts this long


def phase_in(text: str) -> tuple[int, str]:
    """The furthest phase `text` reaches (-1: none yet) and a detail (shards loaded)."""
    reached = max((i for i, (_, pattern) in enumerate(PHASES) if pattern.search(text)), default=-1)
    shards = SHARDS.findall(text)
    detail = f"{shards[-1][1]}/{shards[-1][2]} shards" if shards and reached == 1 else ""
    return reached, detail


@dataclass
class PhaseWatch:
    """Feed it the log as it grows; it prints each new phase with the time since the start."""

    label: str
    began: float = field(default_factory=time.monotonic)
    echo: Callable[[str], None] = click.echo
    clock: Callable[[], float] = time.monotonic
    reached: int = -1
    detail: str = ""
    said_at: float = 0.0
    said: bool = False

    def __post_init__(self) -> None:
        self.said_at = self.began

    def feed(self, text: str) -> None:
        reached, detail = phase_in(text)
        now = self.clock()
        if reached > self.reached or (reached == self.reached and detail and detail != self.detail):
            self.reached, self.detail = reached, detail
            self._say(now)
        elif now - self.said_at >= HEARTBEAT_S:
            self._say(now, still=self.said)

    def _say(self, now: float, still: bool = False) -> None:
        name = PHASES[self.reached][0] if self.reached >= 0 else "starting (imports, reading the model's config)"
        detail = f", {self.detail}" if self.detail else ""
        self.echo(f"  {self.label}: {'still ' if still else ''}{name}{detail} ({now - self.began:.0f} s)")
        self.said_at, self.said = now, True

    def done(self) -> None:
        self.echo(f"  {self.label}: ready ({self.clock() - self.began:.0f} s)")


@dataclass
class LogWatch:
    """A PhaseWatch on a log file: each poll reads what was appended since the last one."""

    log: Path
    watch: PhaseWatch
    offset: int = 0
    seen: str = ""

    def poll(self) -> None:
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                new = handle.read()
        except OSError:
            new = b""
        self.offset += len(new)
        # Phases only move forward, so the tail of what was seen is enough to match a line cut in two.
        self.seen = self.seen[-4096:] + new.decode("utf-8", errors="replace")
        self.watch.feed(self.seen)
