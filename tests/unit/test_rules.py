"""Rules across files (confgen.rules and the catalog's uniqueness checks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confgen.catalog import load_all, select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.rules import referenced_secrets, secret_report

WriteModel = Callable[[str, Any], Path]


def test_two_models_on_one_port(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]) -> None:
    write_model("other", tiny_doc)  # also serve.port 8000
    selection, problems = load_all(project, {})
    assert [m.name for m in selection.models] == ["other", "tiny-cpu"]
    assert [str(p) for p in problems] == [
        "models/tiny-cpu.yml: serve.port: port 8000 is also used by models/other.yml "
        "(give each model its own port (serve.port in the model file))"
    ]
    with pytest.raises(ConfgenError) as info:
        select(project, ["tiny-cpu", "other"], {})
    assert str(info.value) == (
        "models/other.yml: serve.port: port 8000 is also used by models/tiny-cpu.yml "
        "(give each model its own port (serve.port in the model file))"
    )


def test_two_models_with_one_served_name(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["serve"] = {"port": 8001, "served_name": "tiny-cpu"}
    write_model("other", tiny_doc)
    _, problems = load_all(project, {})
    assert [str(p) for p in problems] == [
        "models/tiny-cpu.yml: serve.served_name: served name 'tiny-cpu' is also used by "
        "models/other.yml (give each model its own served name (serve.served_name in the model file))"
    ]


def test_a_default_port_clash_is_found_too(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    del tiny_doc["serve"]  # VLLM_PORT=8000, like tiny-cpu's serve.port
    write_model("other", tiny_doc)
    _, problems = load_all(project, {})
    assert [p.where for p in problems] == ["models/tiny-cpu.yml: serve.port"]


def test_problems_of_every_file_are_collected(project: Project, write_model: WriteModel) -> None:
    write_model("a", "")
    write_model("b", "- x\n")
    project.vars_env.write_text("LITELLM_PORT=abc\n")
    selection, problems = load_all(project, {})
    assert [m.name for m in selection.models] == ["tiny-cpu"]  # merged with built-in defaults
    assert [str(p) for p in problems] == [
        "vars.env: LITELLM_PORT: Input should be a valid integer, unable to parse string as an "
        "integer, got 'abc'",
        "models/a.yml: file is empty (add the info, command, env and litellm sections)",
        "models/b.yml: expected a mapping of sections, got list (see models/tiny-cpu.yml)",
    ]


def test_referenced_secrets_come_from_values_not_comments() -> None:
    text = "# os.environ/IN_A_COMMENT\na:\n  - key: os.environ/HF_TOKEN\n  - 1\n"
    assert referenced_secrets(text) == {"HF_TOKEN", "LITELLM_MASTER_KEY", "VLLM_API_KEY"}


def test_secret_report(project: Project, write_secret: Callable[[str, str], Path]) -> None:
    selection = select(project, ["tiny-cpu"], {})
    assert secret_report(selection) == [
        f"secret {name} is not in secrets/ yet (./runMe.sh creates LITELLM_MASTER_KEY and "
        "VLLM_API_KEY; other secrets: write the file)"
        for name in ("LITELLM_MASTER_KEY", "VLLM_API_KEY")
    ]
    write_secret("LITELLM_MASTER_KEY", "sk-1")
    write_secret("VLLM_API_KEY", "sk-2")
    assert secret_report(selection) == [
        "secrets referenced by the config are present: LITELLM_MASTER_KEY, VLLM_API_KEY"
    ]
