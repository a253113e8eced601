"""The one refusal of a secret's value in a generated file: targets reference secrets by name
(`os.environ/NAME`, a Kubernetes Secret, nginx's 0600 include), so a value found in their text came in
through the catalog (a model file, vars.env) and is never written."""

from __future__ import annotations

from collections.abc import Mapping

from confgen.errors import ConfgenError
from confgen.load import Project, read_secrets

# Shorter values would match ordinary text by chance (test_render.py: short secret values are not searched).
MIN_LENGTH = 8


def refuse_secret_values(project: Project, files: Mapping[str, str], fix: str) -> None:
    """Raise, naming the file and the secret, when any file holds a value from secrets/; `fix` may use {secret}."""
    for secret, value in read_secrets(project).items():
        if len(value) < MIN_LENGTH:
            continue
        for name, text in files.items():
            if value in text:
                raise ConfgenError.one(name, f"would contain the value of secret {secret}", fix.format(secret=secret))
