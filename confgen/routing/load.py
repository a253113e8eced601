"""Read deployments.yml (optional) and check it against the catalog: every error names the file, the key and
the fix, like the model files'."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from confgen.errors import ConfgenError, Problem
from confgen.load import Project, _model_of, _what, read_yaml
from confgen.routing.schema import DeploymentsFile

FILE_NAME = "deployments.yml"


def deployments_path(project: Project) -> Path:
    return project.root / FILE_NAME


def load_deployments(project: Project, known_models: list[str]) -> DeploymentsFile | None:
    """The parsed file, or None when the project has none (every model then has one replica)."""
    path = deployments_path(project)
    if not path.is_file():
        return None
    where = project.rel(path)
    data = _read_yaml(path, where)
    if data is None:
        return DeploymentsFile()
    try:
        parsed = DeploymentsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfgenError([_problem(where, err) for err in exc.errors()]) from None
    problems = catalog_problems(parsed, where, known_models)
    if problems:
        raise ConfgenError(problems)
    return parsed


def _read_yaml(path: Path, where: str) -> Any:
    data = read_yaml(path, where)
    if data is not None and not isinstance(data, dict):
        raise ConfgenError.one(where, f"expected a mapping with routing, gateway and models, got {type(data).__name__}",
                               "see deployments.example.yml")
    return data


def _problem(where: str, err: Any) -> Problem:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    path = ".".join(str(part) for part in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"did you mean {hint[0]!r}? " if hint else ""
        return Problem(f"{where}: {path}", "unknown key", f"{fix}allowed: {', '.join(allowed)}")
    if err["type"] == "missing":
        return Problem(f"{where}: {path}", "required key is missing", "add it")
    if err["type"] == "string_pattern_mismatch" and loc[-1] == "api_base":
        return Problem(f"{where}: {path}", f"not a base URL: {err.get('input')!r}",
                       "write it as http://host:port/v1, without a user or password")
    return Problem(f"{where}: {path}", _what(err))


def _allowed_keys(parent: tuple[int | str, ...]) -> list[str]:
    """The keys of the section at `parent`; a name under `models:` is a key of a mapping, not a section."""
    current: type[BaseModel] | None = DeploymentsFile
    skip_key = False
    for part in parent:
        if isinstance(part, int) or skip_key:
            skip_key = False
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_of(field.annotation) if field else None
        skip_key = bool(field and getattr(field.annotation, "__origin__", None) is dict)
    return sorted(current.model_fields) if current else []


def catalog_problems(parsed: DeploymentsFile, where: str, known: list[str]) -> list[Problem]:
    """Names that are not catalog models, fallbacks that loop, replicas listed twice."""
    problems: list[Problem] = []
    for name, spec in parsed.models.items():
        if name not in known:
            problems.append(_unknown(f"{where}: models.{name}", name, known))
        seen: set[str] = set()
        for index, replica in enumerate(spec.replicas):
            base = replica.api_base.rstrip("/")
            if base in seen:
                problems.append(Problem(f"{where}: models.{name}.replicas.{index}.api_base",
                                        f"{replica.api_base} is listed twice", "list each replica once"))
            seen.add(base)
        for index, target in enumerate(spec.fallbacks):
            key = f"{where}: models.{name}.fallbacks.{index}"
            if target == name:
                problems.append(Problem(key, f"{name} falls back to itself", "name another model"))
            elif target not in known:
                problems.append(_unknown(key, target, known))
    problems += _shared_bases(parsed, where)
    problems += _cycles(parsed, where)
    if parsed.on_demand is not None:
        problems += [_unknown(f"{where}: on_demand.models.{name}", name, known)
                     for name in parsed.on_demand.models if name not in known]
    return problems


def _unknown(key: str, name: str, known: list[str]) -> Problem:
    hint = difflib.get_close_matches(name, known, n=1)
    fix = f"did you mean {hint[0]!r}? " if hint else ""
    return Problem(key, f"{name!r} is not a model in models/", f"{fix}known: {', '.join(known) or 'none'}")


def _shared_bases(parsed: DeploymentsFile, where: str) -> list[Problem]:
    """One vLLM serves one model: the same api_base under two models is a copy-paste slip."""
    owner: dict[str, str] = {}
    problems = []
    for name, spec in parsed.models.items():
        own: set[str] = set()
        for index, replica in enumerate(spec.replicas):
            base = replica.api_base.rstrip("/")
            other = owner.setdefault(base, name)
            if other != name and base not in own:
                problems.append(Problem(f"{where}: models.{name}.replicas.{index}.api_base",
                                        f"{replica.api_base} is also a replica of {other}",
                                        "each vLLM serves one model: give it its own host:port"))
            own.add(base)
    return problems


def _cycles(parsed: DeploymentsFile, where: str) -> list[Problem]:
    """a -> b -> a would bounce a request between models: every chain must end."""
    graph = {name: list(spec.fallbacks) for name, spec in parsed.models.items()}
    loops: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for target in graph.get(path[-1], []):
            if target == path[-1]:
                continue  # a model that falls back to itself: reported on its own
            if target in path:
                cycle = path[path.index(target):]
                first = cycle.index(min(cycle))
                loops.add(tuple(cycle[first:] + cycle[:first]))
            elif len(path) < len(graph) + 1:
                walk([*path, target])

    for name in graph:
        walk([name])
    return [Problem(f"{where}: models.{loop[0]}.fallbacks", f"fallbacks loop: {' -> '.join([*loop, loop[0]])}",
                    "a chain of fallbacks must end at a model without fallbacks") for loop in sorted(loops)]
