"""deployments.yml's `on_demand:` resolved against the catalog and the fit planner: what each model needs
of the GPU profile's budget, and the sets that must fit before anything starts (`confgen check`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confgen.catalog import Selection, select
from confgen.errors import ConfgenError, Problem
from confgen.load import Project, model_names
from confgen.plan import Gpu, get_gpu, plan, specs_from
from confgen.routing.load import FILE_NAME, load_deployments
from confgen.routing.schema import OnDemand, OnDemandModel

SwapMethod = str  # "sleep-1" | "sleep-2" | "stop"
# vLLM's sleep mode needs CUDA, ROCm or XPU (vllm/platforms: is_sleep_mode_available).
CPU_SWAP_REASON = "the CPU build of vLLM has no sleep mode (is_sleep_mode_available: CUDA, ROCm, XPU only)"


@dataclass(frozen=True)
class Member:
    """One on-demand model and its part of the budget, in hundredths of the device (the planner's shares)."""

    name: str
    served_name: str
    device: str
    share_pct: int  # awake: the planner's needed share (fill=False: no spare KV room handed out)
    sleep_pct: int  # asleep: its runtime overhead stays (vLLM sleep mode frees weights and KV cache)
    memory_gb: float
    sleep_gb: float
    settings: OnDemandModel


@dataclass(frozen=True)
class OnDemandPlan:
    gpu: Gpu
    swap: SwapMethod
    swap_reason: str
    in_flight_wait_s: float
    port: int
    ceiling_pct: int
    members: dict[str, Member] = field(hash=False)
    selection: Selection | None = field(default=None, hash=False)  # the merged model files

    @property
    def budget_gb(self) -> float:
        return self.gpu.budget_gb

    def group_of(self, name: str) -> list[str]:
        """`name` and the models that must stay resident with it (its group), in file order."""
        group = self.members[name].settings.group
        return [n for n, m in self.members.items() if n == name or (group and m.settings.group == group)]

    def used_pct(self, awake: Iterable[str], asleep: Iterable[str] = ()) -> int:
        return sum(self.members[n].share_pct for n in awake) + sum(self.members[n].sleep_pct for n in asleep)

    def used_gb(self, awake: Iterable[str], asleep: Iterable[str] = ()) -> float:
        return sum(self.members[n].memory_gb for n in awake) + sum(self.members[n].sleep_gb for n in asleep)

    def fits(self, awake: Iterable[str], asleep: Iterable[str] = ()) -> bool:
        """The planner's rule (confgen/plan/fit.py): the shares add up to at most the profile's ceiling."""
        return self.used_pct(awake, asleep) <= self.ceiling_pct

    @property
    def pinned(self) -> list[str]:
        return [n for n, m in self.members.items() if m.settings.pin]

    @property
    def at_start(self) -> list[str]:
        """Loaded when the controller starts: pinned and preloaded models (with their groups)."""
        names: list[str] = []
        for n, m in self.members.items():
            if m.settings.pin or m.settings.preload:
                names += [g for g in self.group_of(n) if g not in names]
        return names


def plan_on_demand(selection: Selection, spec: OnDemand) -> OnDemandPlan:
    gpu, _ = get_gpu(selection.project, spec.gpu)
    result = plan(specs_from(selection.models), gpu, fill=False)
    memory = gpu.profile.memory_gb
    devices = {m.info.device for m in selection.models}
    if spec.swap != "auto":
        swap, reason = spec.swap, f"{FILE_NAME}: on_demand.swap"
    elif devices == {"cpu"}:
        swap, reason = "stop", CPU_SWAP_REASON
    else:
        swap, reason = gpu.profile.swap, f"{gpu.name}: {gpu.profile.swap_reason}"
    members = {}
    for model, mp in zip(selection.models, result.models, strict=True):
        sleep_gb = 0.0 if swap == "stop" else mp.overhead_gb
        members[model.name] = Member(model.name, model.served_name, model.info.device, round(mp.needed_share * 100),
                                     math.ceil(sleep_gb / memory * 100 - 1e-9), mp.total_gb, sleep_gb,
                                     spec.models[model.name])
    return OnDemandPlan(gpu, swap, reason, spec.in_flight_wait_s, spec.controller_port,
                        math.floor(result.ceiling * 100 + 1e-9), members, selection)


def gateway_view(p: OnDemandPlan, controller_url: str, token_file: Path) -> dict[str, object]:
    """What the gateway reads (CONFGEN_ONDEMAND): where the controller is, and each served name's wait."""
    return {"controller": controller_url, "token_file": str(token_file),
            "models": {m.served_name: {"name": m.name, "load_timeout_s": m.settings.load_timeout_s}
                       for m in p.members.values()}}


def load_plan(project: Project, environ: dict[str, str] | None = None) -> OnDemandPlan | None:
    """The project's on-demand plan, or None when deployments.yml has no enabled `on_demand:`."""
    parsed = load_deployments(project, model_names(project))
    if parsed is None or parsed.on_demand is None or not parsed.on_demand.enabled:
        return None
    spec = parsed.on_demand
    selection = select(project, list(spec.models), environ, source=f"{FILE_NAME}: on_demand.models")
    return plan_on_demand(selection, spec)


def problems(project: Project) -> list[Problem]:
    """What `confgen check` reports: sets that must be resident together and do not fit the budget."""
    try:
        found = load_plan(project)
    except ConfgenError as exc:
        return exc.problems
    return [] if found is None else fit_problems(found)


def fit_problems(p: OnDemandPlan) -> list[Problem]:
    where = f"{FILE_NAME}: on_demand"
    budget = (f"{p.gpu.name} has {p.budget_gb:.1f} GB for vLLM "
              f"({p.ceiling_pct / 100:.2f} of {p.gpu.profile.memory_gb:g})")
    found: list[Problem] = []

    def need(names: list[str]) -> str:
        return ", ".join(f"{n} {p.members[n].memory_gb:.1f} GB" for n in names)

    if p.swap != "stop" and any(m.device == "cpu" for m in p.members.values()):
        found.append(Problem(f"{where}.swap", f"{p.swap} on CPU models: {CPU_SWAP_REASON}", "use swap: stop or auto"))
    start = p.at_start
    if start and not p.fits(start):
        found.append(Problem(f"{where}.models", f"the pinned and preloaded models do not fit together: "
                             f"{need(start)}; {budget}",
                             "drop pin or preload from some, or use a bigger GPU profile "
                             f"(confgen plan --gpu {p.gpu.name} --model ... shows the table)"))
    groups: list[list[str]] = []
    for name in p.members:
        group = p.group_of(name)
        if group not in groups:
            groups.append(group)
    for group in groups:
        label = f"group {p.members[group[0]].settings.group}" if len(group) > 1 else group[0]
        alone = group + [n for n in p.pinned if n not in group]
        if not p.fits(group):
            found.append(Problem(f"{where}.models.{group[0]}", f"{label} does not fit even alone: {need(group)}; "
                                 f"{budget}", "split the group, or use a bigger GPU profile"))
        elif not p.fits(alone):
            found.append(Problem(f"{where}.models.{group[0]}", f"{label} does not fit beside the pinned models: "
                                 f"{need(alone)}; {budget}", "unpin a model, or use a bigger GPU profile"))
    return found
