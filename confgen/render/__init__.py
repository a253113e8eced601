"""Render targets: each module has `render(selection) -> {file name: text}`; listed in TARGETS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.catalog import Selection
from confgen.render import litellm_config, models_yml
from confgen.render.secret_values import refuse_secret_values

Target = Callable[[Selection], dict[str, str]]
TARGETS: dict[str, Target] = {
    "models.yml": models_yml.render,
    "config.yaml": litellm_config.render,
}


def render_all(selection: Selection) -> dict[str, str]:
    files: dict[str, str] = {}
    for target in TARGETS.values():
        files.update(target(selection))
    refuse_secret_values(selection.project, files, "reference it as os.environ/{secret} instead of writing its value")
    return files


def write_all(selection: Selection, out: Path) -> list[Path]:
    written = []
    for name, text in render_all(selection).items():
        path = out / name
        write_atomic(path, text)  # 0600: models.yml lists each model's env
        written.append(path)
    return written
