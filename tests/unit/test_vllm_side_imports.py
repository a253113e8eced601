"""The confgen CLI also runs where only pyproject's own dependencies are installed: the vLLM node image
(Dockerfile.cpu: /opt/confgen, `confgen exec-vllm`) and the CPU vLLM venv (.venv-vllm). Importing it must
not need LiteLLM, the gateway's packages, starlette (the controller's API) or tqdm/huggingface_hub (pull)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "import confgen.cli, confgen.runtime.stack, confgen.runtime.datastores, confgen.runtime.docker"


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared_closure() -> set[str]:
    """pyproject's dependencies and everything they require (as installed here), by distribution name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo, seen = [_name(r) for r in project["dependencies"]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


# Run in a fresh interpreter: every third-party module that confgen's own code imports while the CLI loads
# (a package's own optional imports, such as redis importing cryptography when present, are its business).
PROBE = """
import builtins, json, sys
original, found = builtins.__import__, set()
def spy(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and importer.split(".")[0] == "confgen" and name.split(".")[0] != "confgen":
        found.add(name.split(".")[0])
    return original(name, globals, locals, fromlist, level)
builtins.__import__ = spy
ENTRY
print(json.dumps(sorted(found)))
"""


def test_the_cli_imports_only_what_pyproject_declares() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE.replace("ENTRY", ENTRY)], capture_output=True, text=True,
                          timeout=120, check=True, cwd=ROOT)
    top = set(json.loads(done.stdout)) - set(sys.stdlib_module_names)
    owners = packages_distributions()
    allowed = declared_closure()
    undeclared = sorted(f"{module} ({', '.join(owners.get(module, ['?']))})" for module in top
                        if not {d.lower().replace("_", "-") for d in owners.get(module, [])} & allowed)
    assert not undeclared, f"confgen's CLI imports what pyproject does not declare: {undeclared}"
