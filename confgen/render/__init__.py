"""Render targets: each module has `render(selection) -> {file name: text}`; listed in TARGETS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.load import read_secrets
from confgen.render import litellm_config, models_yml

Target = Callable[[Selection], dict[str, str]]
TARGETS: dict[str, Target] = {
    "models.yml": models_yml.render,
    "config.yaml": litellm_config.render,
}


def render_all(selection: Selection) -> dict[str, str]:
    files: dict[str, str] = {}
    for target in TARGETS.values():
        files.update(target(selection))
    _refuse_secret_values(selection, files)
    return files


def write_all(selection: Selection, out: Path) -> list[Path]:
    written = []
    for name, text in render_all(selection).items():
        path = out / name
        write_atomic(path, text, mode=0o644)
        written.append(path)
    return written


def _refuse_secret_values(selection: Selection, files: dict[str, str]) -> None:
    """A secret's value must never land in a generated file; they are referenced by name."""
    for secret, value in read_secrets(selection.project).items():
        if len(value) < 8:
            continue
        for name, text in files.items():
            if value in text:
                raise ConfgenError.one(
                    name, f"would contain the value of secret {secret}",
                    f"reference it as os.environ/{secret} instead of writing its value",
                )
