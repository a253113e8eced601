"""The catalog: every model file plus vars.env, loaded, validated and merged."""

from __future__ import annotations

from dataclasses import dataclass

from confgen.errors import ConfgenError, Problem
from confgen.load import (
    GlobalVars,
    Project,
    check_model_name,
    load_model_file,
    load_vars,
    model_names,
)
from confgen.merge import ResolvedModel, merge


@dataclass(frozen=True)
class Selection:
    """What a render or a launch works on: the settings and the chosen, merged models."""

    project: Project
    gvars: GlobalVars
    models: tuple[ResolvedModel, ...]


def resolve(project: Project, name: str, gvars: GlobalVars, source: str = "MODEL") -> ResolvedModel:
    path = check_model_name(project, name, source)
    return merge(name, load_model_file(project, path), gvars, project.rel(path))


def select(project: Project, names: list[str], environ: dict[str, str] | None = None,
           source: str = "--model") -> Selection:
    """Load and merge the named models; a name given twice is a usage error."""
    if not names:
        raise ConfgenError.one("--model", "no model selected", "name at least one with --model", exit_code=2)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfgenError.one("--model", f"selected more than once: {', '.join(dupes)}", exit_code=2)
    gvars = load_vars(project, environ)
    models = tuple(resolve(project, name, gvars, source) for name in names)
    _check_unique(models)
    return Selection(project, gvars, models)


def load_all(project: Project, environ: dict[str, str] | None = None) -> tuple[Selection, list[Problem]]:
    """Every model in the catalog; problems of each file are collected, not raised one by one."""
    problems: list[Problem] = []
    names = model_names(project)
    if not names:
        problems.append(Problem(project.rel(project.models_dir), "the catalog is empty: no models/*.yml",
                                "add a model file, e.g. copy models/tiny-cpu.yml"))
    try:
        gvars = load_vars(project, environ)
    except ConfgenError as exc:
        problems.extend(exc.problems)
        gvars = load_vars_defaults()
    models = []
    for name in names:
        try:
            models.append(resolve(project, name, gvars))
        except ConfgenError as exc:
            problems.extend(exc.problems)
    try:
        _check_unique(tuple(models))
    except ConfgenError as exc:
        problems.extend(exc.problems)
    return Selection(project, gvars, tuple(models)), problems


def load_vars_defaults() -> GlobalVars:
    from confgen.schema import Settings

    return GlobalVars(settings=Settings(), env={}, sources={})


def _check_unique(models: tuple[ResolvedModel, ...]) -> None:
    problems = []
    for attr, label in (("served_name", "served name"), ("port", "port")):
        seen: dict[object, str] = {}
        for m in models:
            value = getattr(m, attr)
            if value in seen:
                problems.append(Problem(
                    f"{m.file}: serve.{'served_name' if attr == 'served_name' else 'port'}",
                    f"{label} {value!r} is also used by {seen[value]}",
                    f"give each model its own {label} (serve.{attr} in the model file)",
                ))
            else:
                seen[value] = m.file
    if problems:
        raise ConfgenError(problems)
