"""Which resident models leave so that the wanted ones fit: least recently used idle models first, by the
planner's shares (confgen/controller/plan.py); pinned models never, busy ones only after they finish.

A model leaves with its group. With a sleep swap method an awake model first goes to sleep (it keeps only its
runtime overhead); sleeping models are stopped when sleeping is not enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from confgen.controller.plan import OnDemandPlan


@dataclass(frozen=True)
class Resident:
    name: str
    asleep: bool
    busy: bool  # requests in flight (running or waiting in its server)
    idle_s: float  # since its last request ended


@dataclass(frozen=True)
class Eviction:
    actions: tuple[tuple[str, str], ...]  # (model, "sleep" | "stop"), in order
    fits: bool  # after the actions the wanted models fit
    blocked_by: tuple[str, ...] = ()  # busy models that must leave too (fits is then False)


def plan_eviction(p: OnDemandPlan, wanted: list[str], residents: list[Resident]) -> Eviction:
    awake = {r.name for r in residents if not r.asleep} | set(wanted)
    asleep = {r.name for r in residents if r.asleep} - set(wanted)
    if p.fits(awake, asleep):
        return Eviction((), True)
    idle, busy = _units(p, wanted, residents)
    actions: list[tuple[str, str]] = []
    if p.swap != "stop":
        for unit in idle:
            for name in unit:
                if name in awake:
                    awake.discard(name)
                    asleep.add(name)
                    actions.append((name, "sleep"))
            if p.fits(awake, asleep):
                return Eviction(tuple(actions), True)
    for unit in idle:
        for name in unit:
            awake.discard(name)
            if name in asleep:
                asleep.discard(name)
                actions = [a for a in actions if a[0] != name]
            actions.append((name, "stop"))
        if p.fits(awake, asleep):
            return Eviction(tuple(actions), True)
    blocked: list[str] = []
    for unit in busy:
        awake.difference_update(unit)
        asleep.difference_update(unit)
        blocked += unit
        if p.fits(awake, asleep):
            return Eviction(tuple(actions), False, tuple(blocked))
    return Eviction(tuple(actions), False)


def _units(p: OnDemandPlan, wanted: list[str], residents: list[Resident]) -> tuple[list[list[str]], list[list[str]]]:
    """(idle, busy) groups that may leave, least recently used first; never pinned, never the wanted ones."""
    by_name = {r.name: r for r in residents}
    units: list[list[str]] = []
    for r in residents:
        unit = [n for n in p.group_of(r.name) if n in by_name]
        if unit not in units and not set(unit) & set(wanted) and not any(p.members[n].settings.pin for n in unit):
            units.append(unit)

    def recent(unit: list[str]) -> float:
        return min(by_name[n].idle_s for n in unit)

    idle = sorted((u for u in units if not any(by_name[n].busy for n in u)), key=recent, reverse=True)
    busy = sorted((u for u in units if any(by_name[n].busy for n in u)), key=recent, reverse=True)
    return idle, busy
