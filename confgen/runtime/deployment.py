"""What a Docker deployment of a selection runs: one kind of device, and for GPU models the planner's
verdict and each model's `--gpu-memory-utilization` share (a selection that does not fit is refused)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from confgen.catalog import Selection
from confgen.errors import ConfgenError, Problem
from confgen.plan import Plan, plan_selection

Device = Literal["gpu", "cpu"]
DEFAULT_GPU = "dgx-spark"


@dataclass(frozen=True)
class Deployment:
    selection: Selection
    device: Device
    gpu: str | None = None
    # Per model name: vLLM flags that replace the model file's (the plan's share), as one string.
    vllm_args: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.selection.models]


def device_of(selection: Selection, where: str = "--model") -> Device:
    devices = {m.info.device for m in selection.models}
    if len(devices) > 1:
        mixed = ", ".join(f"{m.name} ({m.info.device})" for m in selection.models)
        raise ConfgenError.one(where, f"mixes GPU and CPU models: {mixed}",
                               "deploy GPU models and CPU models separately", exit_code=2)
    device: Device = "cpu" if devices == {"cpu"} else "gpu"
    return device


def plan_deployment(selection: Selection, gpu: str | None, context: int | None = None,
                    concurrency: int | None = None, where: str = "--model") -> Deployment:
    """Plan the selection on `gpu`; refuse, with the plan's numbers, one that does not fit."""
    device = device_of(selection, where)
    if device == "cpu":
        return Deployment(selection, "cpu")
    gpu = gpu or DEFAULT_GPU
    result = plan_selection(selection, gpu, context, concurrency)
    if not result.fits:
        shares = ", ".join(f"{m.name} {m.total_gb:.1f} GB ({m.needed_share:.2f})" for m in result.models)
        fix = "; ".join(result.suggestions) or "choose fewer or smaller models"
        raise ConfgenError([Problem(f"{where} on {gpu}", f"does not fit: {reason}", "")
                            for reason in result.reasons]
                           + [Problem(f"{where} on {gpu}", f"needs per model: {shares}",
                                      f"what would fit: {fix} (confgen plan --gpu {gpu} shows the table)")])
    args = {}
    for m in result.models:
        flags = ["--gpu-memory-utilization", f"{m.gpu_memory_utilization:.2f}"]
        if context is not None or concurrency is not None:
            flags = list(m.vllm_args)
        args[m.name] = " ".join(flags)
    return Deployment(selection, "gpu", gpu, args, result)
