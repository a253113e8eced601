"""Rules across files that the schema alone cannot state."""

from __future__ import annotations

import re

import yaml

from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.load import read_secrets
from confgen.render import litellm_config

_REFERENCE = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)")
# Referenced by the generated config; created by `./runMe.sh` on first run if missing.
REQUIRED_SECRETS = ("LITELLM_MASTER_KEY", "VLLM_API_KEY")


def referenced_secrets(config_text: str) -> set[str]:
    """Secrets named by `os.environ/NAME` values of a rendered config (comments do not count)."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            names.update(_REFERENCE.findall(node))

    walk(yaml.safe_load(config_text))
    return names | set(REQUIRED_SECRETS)


def secret_report(selection: Selection) -> list[str]:
    """Name the secrets the config references that are not present (they are not errors before a launch)."""
    project = selection.project
    try:
        names = referenced_secrets(litellm_config.render(selection)["config.yaml"])
    except ConfgenError:
        names = set(REQUIRED_SECRETS)
    present = set(read_secrets(project))
    missing = sorted(names - present)
    if not missing:
        return [f"secrets referenced by the config are present: {', '.join(sorted(names))}"]
    return [f"secret {name} is not in {project.rel(project.secrets_dir)}/ yet "
            f"(./runMe.sh creates LITELLM_MASTER_KEY and VLLM_API_KEY; other secrets: write the file)"
            for name in missing]
