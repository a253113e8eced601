"""Whatever a model file holds, confgen answers with a ConfgenError (exit 1), never a crash.

Inputs: random nested documents, random mutations of a valid document (including random
`command` lines), and random text read as YAML. Each example rewrites models/x.yml in one
project, so the function-scoped `project` fixture is shared by the examples on purpose.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confgen.catalog import select
from confgen.cli import cli
from confgen.command import normalise_flag
from confgen.errors import ConfgenError
from confgen.load import Project, load_model_file
from confgen.render import render_all
from confgen.schema import Arch, Info, LiteLLMParams, ModelFile, Serve

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SECTIONS: dict[str, list[str]] = {
    "info": list(Info.model_fields),
    "arch": list(Arch.model_fields),
    "serve": list(Serve.model_fields),
    "command": [],
    "env": ["HF_HUB_OFFLINE", "HF_TOKEN", "NCCL_IB_DISABLE", "1BAD", "yes"],
    "litellm": list(LiteLLMParams.model_fields),
}
assert set(SECTIONS) == set(ModelFile.model_fields)
KEY_PATHS = [(s,) for s in SECTIONS] + [(s, k) for s, keys in SECTIONS.items() for k in keys]

TOKENS = [
    "vllm", "serve", "m", "Qwen/Qwen3-8B", "--port", "--port=1", "9", "--host", "0.0.0.0",
    "--served-model-name", "--served_model_name", "a", "b", "--api-key", "--api_key=sk", "sk-x",
    "--max-model-len", "--max_model_len=4096", "512", "0", "-1", "auto", "1k", "-tp", "2", "-O3",
    "--dtype", "half", "#", "# note", "\\\n", "\n", "\\\r\n", "'", '"', "'a b'", '"c d"', "\\", "=",
    "--", "-", "--=", "ü", "\t",
]
SPECIAL = [
    "128K", "64k", "1M", "-1", "0", "1.5", "lots", "yes", "no", "on", "null", "~", "", " ",
    "0.0.0.0", "::", "gpu", "cpu", "2020-01-01", ".inf", "-.inf", ".nan", "vllm serve m",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(SPECIAL)
)
keys = st.sampled_from(sorted({k for path in KEY_PATHS for k in path})) | st.text(max_size=8)
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
commands = (
    st.lists(st.sampled_from(TOKENS), max_size=14).map(lambda ts: "vllm serve m " + " ".join(ts))
    | st.lists(st.sampled_from(TOKENS), max_size=14).map(" ".join)
    | st.text(max_size=60)
)
# Plausible values first, so that many mutations stay valid and reach the merge and the render.
values = st.one_of(
    st.integers(-2, 70000), st.floats(-1, 3), st.sampled_from(SPECIAL), commands, nested
)
random_documents = nested | st.dictionaries(st.sampled_from(list(SECTIONS)) | keys, nested, max_size=6)
yaml_text = st.text(
    alphabet=st.sampled_from(list("ab01:-[]{},#&*!|>'\"%@`?.\\ \n\t")) | st.characters(codec="utf-8"),
    max_size=200,
)


def mutate(data: st.DataObject, doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        path = data.draw(st.sampled_from(KEY_PATHS), label="key")
        if path == ("command",):
            value: object = data.draw(commands, label="command")
        else:
            value = data.draw(values, label="value")
        node: Any = doc
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if data.draw(st.booleans(), label="delete") and path[-1] in node:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return doc


def write(project: Project, text: str) -> Path:
    path = project.models_dir / "x.yml"
    path.write_text(text, encoding="utf-8")
    return path


def dump(doc: object) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


def load_merge_render(project: Project, text: str) -> None:
    """Either every step succeeds and the outputs are sound, or a ConfgenError says why."""
    path = write(project, text)
    try:
        load_model_file(project, path)
        selection = select(project, ["x"], {})
    except ConfgenError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert (bool(error.problems), error.exit_code) == (True, 1)
        return
    (model,) = selection.models
    dynamic = [normalise_flag(a.partition("=")[0]) for a in model.argv]
    assert [dynamic.count(f) for f in ("--host", "--port", "--served-model-name", "--api-key")] == [1, 1, 1, 0]
    files = render_all(selection)  # a valid model always renders
    config = yaml.safe_load(files["config.yaml"])
    assert config["model_list"][0]["model_name"] == model.served_name
    assert yaml.safe_load(files["models.yml"])["models"]["x"]["argv"] == model.argv


@BOUNDED
@given(doc=random_documents)
def test_random_documents(project: Project, doc: object) -> None:
    load_merge_render(project, dump(doc))


@BOUNDED
@given(data=st.data())
def test_mutations_of_a_valid_document(project: Project, tiny_doc: dict[str, Any], data: st.DataObject) -> None:
    tiny_doc["serve"]["port"] = 8001  # not tiny-cpu's port, so a valid mutation stays valid
    load_merge_render(project, dump(mutate(data, tiny_doc)))


@BOUNDED
@given(text=yaml_text)
def test_random_text(project: Project, text: str) -> None:
    load_merge_render(project, text)


@BOUNDED
@given(data=st.data())
def test_random_edits_of_the_valid_text(project: Project, data: st.DataObject) -> None:
    text = (project.models_dir / "tiny-cpu.yml").read_text()
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 20)), label="end")
    load_merge_render(project, text[:start] + data.draw(yaml_text, label="insert") + text[end:])


@settings(BOUNDED, max_examples=100)
@given(data=st.data())
def test_check_never_crashes(project: Project, tiny_doc: dict[str, Any], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["document", "mutation", "text"]), label="kind")
    if kind == "document":
        text = dump(data.draw(random_documents, label="doc"))
    elif kind == "mutation":
        text = dump(mutate(data, tiny_doc))
    else:
        text = data.draw(yaml_text, label="text")
    write(project, text)
    result = CliRunner().invoke(cli, ["--root", str(project.root), "check", "--no-vllm"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        # A problem may quote the input, control characters and all: check the frame only.
        assert result.stderr.startswith("error: ")
        assert result.stderr.endswith(f" problem(s) in {project.root}\n")
