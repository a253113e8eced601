"""Secrets live one per file in secrets/; the launcher creates the two it owns on first run."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.errors import ConfgenError
from confgen.load import Project, read_secrets
from confgen.secretnames import looks_secret

GENERATED = ("LITELLM_MASTER_KEY", "VLLM_API_KEY")
# Secrets handed to vLLM's process when present.
VLLM_SECRETS = ("VLLM_API_KEY", "HF_TOKEN")
# LiteLLM refuses these, and so do we (FINDINGS).
WEAK_KEYS = {"sk-1234", "sk-FAKE", "changeme", ""}


def ensure_generated(project: Project) -> list[str]:
    """Create missing generated secrets (mode 0600); return the names created."""
    created = []
    for name in GENERATED:
        path = project.secrets_dir / name
        if path.exists():
            continue
        write_atomic(path, f"sk-{secrets.token_urlsafe(32)}\n", mode=0o600)
        created.append(name)
    return created


def require(project: Project, names: tuple[str, ...]) -> dict[str, str]:
    """The named secrets, or one error listing every missing or weak one with the fix."""
    found = read_secrets(project)
    rel = project.rel(project.secrets_dir)
    problems = []
    for name in names:
        value = found.get(name)
        if value is None:
            problems.append((f"{rel}/{name}", "missing secret", f"write the value to {rel}/{name} (mode 0600)"))
        elif value in WEAK_KEYS or len(value) < 16:
            problems.append((f"{rel}/{name}", "weak secret (shorter than 16 characters or a known default)",
                             f"delete {rel}/{name} and run ./runMe.sh to generate a strong one"))
    if problems:
        from confgen.errors import Problem

        raise ConfgenError([Problem(*p) for p in problems])
    return {name: found[name] for name in names}


def optional(project: Project, names: tuple[str, ...]) -> dict[str, str]:
    found = read_secrets(project)
    return {name: found[name] for name in names if name in found}


def for_vllm(project: Project, env: Mapping[str, str]) -> dict[str, str]:
    """HF_TOKEN, and each secret-looking variable the model's env names with an empty value (the way to ask
    for one: confgen.secretnames refuses a value there), from secrets/; the gateway's master key never."""
    asked = [name for name, value in env.items() if not value and looks_secret(name)]
    names = tuple(name for name in ("HF_TOKEN", *asked) if name != "LITELLM_MASTER_KEY")
    return optional(project, names)


def masked(value: str) -> str:
    """Enough to recognise a key, never enough to use it."""
    return f"{value[:6]}...{value[-4:]}" if len(value) > 16 else "***"


def secret_path(project: Project, name: str) -> Path:
    return project.secrets_dir / name


def check_mode(project: Project) -> list[str]:
    """Warn about secret files others can read."""
    warnings = []
    for name in read_secrets(project):
        mode = os.stat(secret_path(project, name)).st_mode & 0o077
        if mode:
            warnings.append(f"{project.rel(secret_path(project, name))} is readable by others: chmod 600 it")
    return warnings
