"""The phases of a starting vLLM read from its log (confgen/runtime/vllm_phases.py). CPU_LOG holds lines,
verbatim, of a real start of vLLM 0.32's CPU build serving smollm2-135m here (tests/e2e/test_cpu_models.py, its
vllm.log; long lines cut, in tests/unit/data/); GPU_LINES are the GPU runner's messages as vLLM 0.32's source
writes them (gpu_model_runner.py, gpu_worker.py), with the values a start could log."""

from __future__ import annotations

from pathlib import Path

import pytest

from confgen.runtime.vllm_phases import HEARTBEAT_S, LogWatch, PhaseWatch, phase_in

CPU_LOG = (Path(__file__).parent / "data" / "vllm-0.32-cpu-start.log").read_text(encoding="utf-8")
GPU_LINES = [
    "(Worker pid=1) INFO [gpu_model_runner.py:5040] Starting to load model zai-org/GLM-4.7-Flash...",
    "Loading safetensors checkpoint shards:  50% Completed | 24/48 [00:40<00:40,  1.70s/it]",
    "(Worker pid=1) INFO [backends.py:1167] Dynamo bytecode transform time: 9.12 s",
    "(Worker pid=1) INFO [gpu_worker.py:760] Available KV cache memory: 41.2 GiB",
    "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  40%|████      | 21/51 [00:05<00:07]",
    "(Worker pid=1) INFO [gpu_model_runner.py:6582] Graph capturing finished in 14 secs, took 0.52 GiB",
]


@pytest.mark.parametrize(("upto", "phase", "detail"), [
    (1, -1, ""),
    (2, 0, ""),
    (3, 1, ""),
    (4, 1, "0/1 shards"),
    (5, 1, "1/1 shards"),
    (8, 3, ""),
    (10, 5, ""),
    (11, 6, ""),
])
def test_each_line_of_a_real_cpu_start_moves_the_phase(upto: int, phase: int, detail: str) -> None:
    assert phase_in("\n".join(CPU_LOG.splitlines()[:upto])) == (phase, detail)


def test_gpu_phases_include_compiling_and_graph_capture() -> None:
    reached = [phase_in("\n".join(GPU_LINES[:n]))[0] for n in range(1, len(GPU_LINES) + 1)]
    assert reached == [1, 1, 2, 3, 4, 5]
    assert phase_in("\n".join(GPU_LINES[:2])) == (1, "24/48 shards")


def test_the_watch_says_each_phase_once_with_the_elapsed_time_then_ready(tmp_path: Path) -> None:
    said: list[str] = []
    now = [100.0]
    watch = PhaseWatch("vLLM (smollm2-135m)", began=100.0, echo=said.append, clock=lambda: now[0])
    log = tmp_path / "vllm.log"
    log.write_text("")
    follow = LogWatch(log, watch)
    for seconds, line in zip((1, 27, 41, 41, 42, 43, 47, 47, 47, 52, 55), CPU_LOG.splitlines(), strict=True):
        now[0] = 100.0 + seconds
        with log.open("a") as out:
            out.write(line[:40])  # a line may arrive in two writes
        follow.poll()
        with log.open("a") as out:
            out.write(line[40:] + "\n")
        follow.poll()
    watch.done()
    assert said == [
        "  vLLM (smollm2-135m): starting the engine (27 s)",
        "  vLLM (smollm2-135m): loading weights (41 s)",
        "  vLLM (smollm2-135m): loading weights, 0/1 shards (41 s)",
        "  vLLM (smollm2-135m): loading weights, 1/1 shards (42 s)",
        "  vLLM (smollm2-135m): allocating the KV cache (47 s)",
        "  vLLM (smollm2-135m): starting the API server (52 s)",
        "  vLLM (smollm2-135m): answering health checks (55 s)",
        "  vLLM (smollm2-135m): ready (55 s)",
    ]


def test_a_long_phase_is_said_again_every_heartbeat() -> None:
    said: list[str] = []
    now = [0.0]
    watch = PhaseWatch("vLLM (big)", began=0.0, echo=said.append, clock=lambda: now[0])
    watch.feed(GPU_LINES[0])
    now[0] = HEARTBEAT_S - 1
    watch.feed(GPU_LINES[0])
    now[0] = HEARTBEAT_S + 1
    watch.feed(GPU_LINES[0])
    assert said == ["  vLLM (big): loading weights (0 s)",
                    f"  vLLM (big): still loading weights ({HEARTBEAT_S + 1:.0f} s)"]


def test_silence_before_the_first_line_is_said_after_a_heartbeat() -> None:
    said: list[str] = []
    now = [0.0]
    watch = PhaseWatch("vLLM (big)", began=0.0, echo=said.append, clock=lambda: now[0])
    watch.feed("")
    now[0] = HEARTBEAT_S
    watch.feed("")
    now[0] = 2 * HEARTBEAT_S
    watch.feed("")
    assert said == [f"  vLLM (big): starting (imports, reading the model's config) ({HEARTBEAT_S:.0f} s)",
                    f"  vLLM (big): still starting (imports, reading the model's config) ({2 * HEARTBEAT_S:.0f} s)"]
