"""Read the catalog from disk: model files (YAML), vars.env (dotenv) and the secrets folder.

Every parse and schema error becomes a ConfgenError naming the file, the key path and the fix.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from dotenv.parser import parse_stream
from pydantic import BaseModel, ValidationError

from confgen.errors import ConfgenError, Problem
from confgen.schema import SETTING_NAMES, ModelFile, Settings
from confgen.secretnames import literal_secret

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Project:
    """Where the catalog lives: models/, vars.env, the template and secrets/."""

    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def vars_env(self) -> Path:
        return self.root / "vars.env"

    @property
    def template(self) -> Path:
        return self.root / "litellm_config.template.yaml"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def model_names(project: Project) -> list[str]:
    if not project.models_dir.is_dir():
        return []
    return sorted(p.stem for p in project.models_dir.glob("*.yml") if MODEL_NAME.match(p.stem))


def check_model_name(project: Project, name: str, source: str = "MODEL") -> Path:
    """Return the file of model `name`, refusing paths and unknown names with the known list."""
    known = model_names(project)
    if not MODEL_NAME.match(name) or ".." in name:
        raise ConfgenError.one(
            source,
            f"{name!r} is not a model name",
            "use a file name from models/ without .yml (lowercase letters, digits, '.', '_', '-'); "
            f"known: {', '.join(known) or 'none'}",
            exit_code=2,
        )
    path = project.models_dir / f"{name}.yml"
    if not path.is_file():
        hint = difflib.get_close_matches(name, known, n=1)
        fix = f"did you mean {hint[0]!r}? " if hint else ""
        raise ConfgenError.one(
            source,
            f"unknown model {name!r}",
            f"{fix}known models: {', '.join(known) or 'none (models/ is empty)'}",
            exit_code=1,
        )
    return path


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation(where: str, model: type[BaseModel], exc: ValidationError) -> ConfgenError:
    problems = []
    for err in exc.errors():
        loc = _loc(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(model, parent)
            hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            fix = f"did you mean {hint[0]!r}? " if hint else ""
            problems.append(Problem(f"{where}: {loc}", "unknown key", f"{fix}allowed: {', '.join(allowed)}"))
        elif kind == "missing":
            problems.append(Problem(f"{where}: {loc}", "required key is missing", "add it"))
        else:
            problems.append(Problem(f"{where}: {loc}", _what(err)))
    return ConfgenError(problems)


def _what(err: Any) -> str:
    """pydantic's message plus the offending value, unless the message already shows it."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f", got {got!r}"
    if shown and repr(got) in msg:
        shown = ""
    return f"{msg}{shown}"


def _allowed_keys(model: type[BaseModel], parent: tuple[int | str, ...]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in parent:
        if isinstance(part, int):  # an item of a list of sections: same model
            continue
        field = current.model_fields.get(part) if current else None
        current = _model_of(field.annotation) if field else None
    return sorted(current.model_fields) if current else []


def _model_of(ann: Any) -> type[BaseModel] | None:
    """The section model inside `X`, `X | None` or `list[X]`."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in get_args(ann):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def read_yaml(path: Path, where: str) -> Any:
    """Parse a YAML file; unreadable files and syntax errors become a ConfgenError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfgenError.one(where, f"cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfgenError.one(f"{where}", f"YAML syntax error at {line}{problem}", "fix the YAML") from None
    except RecursionError:
        raise ConfgenError.one(where, "YAML is nested too deeply to read", "fix the YAML") from None


def load_model_file(project: Project, path: Path) -> ModelFile:
    where = project.rel(path)
    data = read_yaml(path, where)
    if data is None:
        raise ConfgenError.one(where, "file is empty", "add the info, command, env and litellm sections")
    if not isinstance(data, dict):
        raise ConfgenError.one(
            where, f"expected a mapping of sections, got {type(data).__name__}", "see models/tiny-cpu.yml"
        )
    try:
        model = ModelFile.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(where, ModelFile, exc) from None
    secrets = [literal_secret(f"{where}: env.{key}", key, value) for key, value in model.env.items()]
    if any(secrets):
        raise ConfgenError([problem for problem in secrets if problem is not None])
    return model


@dataclass(frozen=True)
class EnvFile:
    """A dotenv file's variables, and the line each is written on."""

    values: dict[str, str]
    lines: dict[str, int]


def read_env_file(path: Path, where: str) -> EnvFile:
    """Parse a dotenv file; lines that do not parse, or keys that are not names, are errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return EnvFile({}, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfgenError.one(where, f"cannot read: {exc}") from None
    # One parse, ours: dotenv_values() would parse again and log its own warning for a bad line.
    bindings = list(parse_stream(io.StringIO(text)))
    problems = [
        Problem(f"{where}: line {binding.original.line}", f"cannot parse {binding.original.string.strip()!r}",
                "write KEY=value")
        for binding in bindings
        if binding.error
    ]
    values = {binding.key: binding.value for binding in bindings if binding.key is not None}
    lines = {binding.key: binding.original.line for binding in bindings if binding.key is not None}
    for key, value in values.items():
        if not ENV_KEY.match(key):
            problems.append(Problem(f"{where}: {key}", "not a valid variable name", "use letters, digits, '_'"))
        elif value is None:
            problems.append(Problem(f"{where}: {key}", "has no value", f"write {key}=value"))
    if problems:
        raise ConfgenError(problems)
    return EnvFile({k: v for k, v in values.items() if v is not None}, lines)


@dataclass(frozen=True)
class GlobalVars:
    """vars.env after the process environment is applied: typed settings + env passed to vLLM."""

    settings: Settings
    env: dict[str, str]
    sources: dict[str, str]


def load_vars(project: Project, environ: dict[str, str] | None = None) -> GlobalVars:
    """Load vars.env; a process variable of the same name overrides it (documented precedence)."""
    environ = dict(os.environ) if environ is None else environ
    where = project.rel(project.vars_env)
    env_file = read_env_file(project.vars_env, where)
    raw = env_file.values
    sources = dict.fromkeys(raw, where)
    merged = dict(raw)
    for key in SETTING_NAMES | set(raw):
        if key in environ:
            merged[key] = environ[key]
            sources[key] = "environment"
    problems = []
    for key in raw:
        if key in SETTING_NAMES:
            continue
        close = difflib.get_close_matches(key, SETTING_NAMES, n=1, cutoff=0.85)
        if close:
            problems.append(Problem(f"{where}: {key}", "unknown setting", f"did you mean {close[0]}?"))
    problems += _literal_secrets(where, env_file, merged)
    if problems:
        raise ConfgenError(problems)
    typed = {k: v for k, v in merged.items() if k in SETTING_NAMES}
    try:
        settings = Settings.model_validate(typed)
    except ValidationError as exc:
        raise ConfgenError(
            [Problem(f"{sources.get(str(e['loc'][0]), where)}: {_loc(e['loc'])}", _what(e))
             for e in exc.errors()]
        ) from None
    env = {k: v for k, v in merged.items() if k not in SETTING_NAMES}
    return GlobalVars(settings=settings, env=env, sources=sources)


def _literal_secrets(where: str, env_file: EnvFile, merged: dict[str, str]) -> list[Problem]:
    """Secret-looking variables of vars.env with a value, written there or given by the environment."""
    found = []
    for key, written in env_file.values.items():
        if key in SETTING_NAMES:
            continue
        line = f"line {env_file.lines[key]}"
        if written or not merged[key]:
            found.append(literal_secret(f"{where}: {line}: {key}", key, written))
        else:  # an empty KEY= that the environment fills
            found.append(literal_secret(f"environment: {key} (named in {where} {line})", key, merged[key],
                                        then=f"unset it in the environment, or drop it from {where}"))
    return [problem for problem in found if problem is not None]


def read_secrets(project: Project) -> dict[str, str]:
    """secrets/<NAME> files -> {NAME: value}; README and dotfiles are not secrets."""
    found: dict[str, str] = {}
    if not project.secrets_dir.is_dir():
        return found
    for path in sorted(project.secrets_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not ENV_KEY.match(path.name):
            continue
        try:
            found[path.name] = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfgenError.one(project.rel(path), f"cannot read: {exc}",
                                   "write the value as one line of UTF-8 text") from None
    return found
