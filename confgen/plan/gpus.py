"""GPU profiles: shipped in the package (confgen/gpus/*.yml) and the user's own (<project>/gpus/*.yml).

A user profile with the name of a shipped one replaces it. Every profile is validated like a model
file: unknown keys and bad values are errors that name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from confgen.errors import ConfgenError, Problem
from confgen.load import MODEL_NAME, Project


class GpuProfile(BaseModel):
    """gpus/<name>.yml: one device and how much of it vLLM may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1, description="One line: the device.")
    memory_gb: float = Field(gt=0, description="Device memory, GB (unified: the whole machine's).")
    unified: bool = Field(False, description="Memory shared with the CPU and the OS (DGX Spark).")
    ceiling: float = Field(0.9, gt=0, le=1, description="Most --gpu-memory-utilization all models may add up to.")
    os_reserve_gb: float = Field(0, ge=0, description="Memory the OS and other processes keep (unified memory).")
    fp8_mla_kv: bool = Field(True, description="Whether MLA models can use an fp8 KV cache here.")
    # How on-demand serving takes a model out of memory by default (deployments.yml on_demand.swap: auto).
    # sleep-1: vLLM's sleep mode level 1 moves the weights to host RAM (docs.vllm.ai, "Sleep Mode").
    swap: Literal["sleep-1", "sleep-2", "stop"] = Field(
        "sleep-1", description="Default swap method: sleep-1/sleep-2 (vLLM sleep mode) or stop (stop and start).")
    swap_reason: str = Field("a discrete GPU with host RAM to hold the weights of a sleeping model",
                             description="Why this profile swaps that way (shown by the controller).")
    notes: list[str] = Field(default_factory=list)

    @property
    def budget_gb(self) -> float:
        """What all vLLMs together may reserve: the ceiling, or less where the OS reserve is larger."""
        return min(self.ceiling * self.memory_gb, self.memory_gb - self.os_reserve_gb)


@dataclass(frozen=True)
class Gpu:
    """A named profile and where it came from."""

    name: str
    profile: GpuProfile
    source: str

    @property
    def budget_gb(self) -> float:
        return self.profile.budget_gb


def user_gpus_dir(project: Project) -> Path:
    return project.root / "gpus"


def load_gpus(project: Project | None = None) -> tuple[dict[str, Gpu], list[Problem]]:
    """Every profile by name (shipped, then the project's), and the problems of the files that failed."""
    gpus: dict[str, Gpu] = {}
    problems: list[Problem] = []
    shipped = resources.files("confgen") / "gpus"
    for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            _add(gpus, problems, entry.name[:-4], entry.read_text(encoding="utf-8"), f"confgen/gpus/{entry.name}")
    if project is not None and user_gpus_dir(project).is_dir():
        for path in sorted(user_gpus_dir(project).glob("*.yml")):
            where = project.rel(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(where, f"cannot read: {exc}"))
                continue
            _add(gpus, problems, path.stem, text, where)
    return gpus, problems


def _add(gpus: dict[str, Gpu], problems: list[Problem], name: str, text: str, where: str) -> None:
    if not MODEL_NAME.match(name):
        problems.append(Problem(where, f"{name!r} is not a profile name", "lowercase letters, digits, '.', '_', '-'"))
        return
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.append(Problem(where, f"YAML syntax error: {getattr(exc, 'problem', None) or exc}", "fix the YAML"))
        return
    if not isinstance(data, dict):
        problems.append(Problem(where, "expected a mapping (description, memory_gb, ceiling...)",
                                "see confgen/gpus/h100-80gb.yml"))
        return
    try:
        profile = GpuProfile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            what = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
            fix = f"allowed: {', '.join(sorted(GpuProfile.model_fields))}" if err["type"] == "extra_forbidden" else ""
            problems.append(Problem(f"{where}: {loc}", what, fix))
        return
    if profile.os_reserve_gb >= profile.memory_gb:
        problems.append(Problem(f"{where}: os_reserve_gb", f"{profile.os_reserve_gb:g} GB leaves nothing of "
                                f"memory_gb {profile.memory_gb:g}", "lower it"))
        return
    gpus[name] = Gpu(name, profile, where)


def get_gpu(project: Project | None, name: str) -> tuple[Gpu, dict[str, Gpu]]:
    """The profile `name` and all profiles; an unknown name or a broken profile file is a user error."""
    gpus, problems = load_gpus(project)
    if problems:
        raise ConfgenError(problems)
    if name not in gpus:
        raise ConfgenError.one("--gpu", f"unknown GPU profile {name!r}",
                               f"known: {', '.join(sorted(gpus))}; add your own as gpus/{name}.yml, "
                               "see confgen plan --list-gpus", exit_code=2)
    return gpus[name], gpus
