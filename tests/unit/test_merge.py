"""confgen.merge: model file > vars.env (process env over it) > built-in defaults, then frozen."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from confgen.catalog import select
from confgen.errors import ConfgenError
from confgen.load import Project, load_vars
from confgen.merge import ResolvedModel, merge
from confgen.schema import ModelFile

WriteModel = Callable[[str, Any], Path]

VARS = """\
LITELLM_TEMPERATURE=0.5
LITELLM_TOP_P=0.8
LITELLM_MAX_TOKENS=256
MAX_PARALLEL_REQUESTS=4
VLLM_HOST=0.0.0.0
VLLM_PORT=9000
NCCL_IB_DISABLE=1
HF_HUB_OFFLINE=0
"""


def resolve_one(project: Project, name: str, environ: dict[str, str] | None = None) -> ResolvedModel:
    (model,) = select(project, [name], environ or {}).models
    return model


@pytest.fixture
def tiny(project: Project, write_vars: Callable[[str], Path]) -> ResolvedModel:
    write_vars(VARS)
    return resolve_one(project, "tiny-cpu")


def test_model_values_win_over_vars_env_which_wins_over_defaults(tiny: ResolvedModel) -> None:
    # max_tokens and timeout are in the model file; temperature, top_p, parallel in vars.env;
    # top_k, repetition_penalty nowhere.
    assert dataclasses.asdict(tiny.sampling) == {
        "temperature": 0.5,
        "top_p": 0.8,
        "top_k": 50,
        "repetition_penalty": 1.1,
        "max_tokens": 64,
    }
    assert dataclasses.asdict(tiny.limits) == {
        "max_parallel_requests": 4,
        "timeout": 120.0,
        "rpm": None,
        "tpm": None,
    }
    assert tiny.sources == {
        "temperature": "vars.env",
        "top_p": "vars.env",
        "top_k": "built-in default",
        "repetition_penalty": "built-in default",
        "max_tokens": "models/tiny-cpu.yml",
        "max_parallel_requests": "vars.env",
        "timeout": "models/tiny-cpu.yml",
    }


def test_the_process_environment_sits_between_model_and_vars_env(
    project: Project, write_vars: Callable[[str], Path], write_model: WriteModel,
    tiny_doc: dict[str, Any],
) -> None:
    write_vars(VARS)
    tiny_doc["litellm"]["temperature"] = 0.2
    write_model("tiny-cpu", tiny_doc)
    model = resolve_one(
        project, "tiny-cpu", {"LITELLM_TEMPERATURE": "1.5", "LITELLM_TOP_P": "0.6", "LITELLM_TOP_K": "5"}
    )
    assert (model.sampling.temperature, model.sources["temperature"]) == (0.2, "models/tiny-cpu.yml")
    assert (model.sampling.top_p, model.sources["top_p"]) == (0.6, "environment")
    assert (model.sampling.top_k, model.sources["top_k"]) == (5, "environment")


def test_where_the_model_runs(tiny: ResolvedModel) -> None:
    assert tiny.name == "tiny-cpu"
    assert tiny.file == "models/tiny-cpu.yml"
    assert tiny.served_name == "tiny-cpu"  # the file name when serve.served_name is not set
    assert tiny.port == 8000  # serve.port beats VLLM_PORT
    assert tiny.host == "0.0.0.0"
    assert tiny.api_base == "http://127.0.0.1:8000/v1"  # a wildcard bind is reached on loopback
    assert tiny.hf_id == ".local/models/tiny-cpu"
    assert tiny.max_model_len == 512


def test_unset_serve_values_come_from_vars_env(
    project: Project, write_vars: Callable[[str], Path], write_model: WriteModel,
    tiny_doc: dict[str, Any],
) -> None:
    write_vars(VARS)
    del tiny_doc["serve"]
    write_model("tiny-cpu", tiny_doc)
    model = resolve_one(project, "tiny-cpu")
    assert model.port == 9000
    assert model.api_base == "http://127.0.0.1:9000/v1"


@pytest.mark.parametrize(
    ("host", "api_base"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/v1"),
        ("::", "http://127.0.0.1:8000/v1"),
        ("::1", "http://[::1]:8000/v1"),
        ("gpu-box.lan", "http://gpu-box.lan:8000/v1"),
    ],
)
def test_api_base(project: Project, write_vars: Callable[[str], Path], host: str, api_base: str) -> None:
    write_vars(f"VLLM_HOST={host}\n")
    assert resolve_one(project, "tiny-cpu").api_base == api_base


def test_passthrough_variables_reach_vllm_and_the_model_env_wins(tiny: ResolvedModel) -> None:
    assert tiny.env == {
        "NCCL_IB_DISABLE": "1",  # vars.env
        "HF_HUB_OFFLINE": "1",  # the model file's "1" beats vars.env's "0"
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }


def test_served_name_from_the_file(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["serve"]["served_name"] = "org/tiny:latest"
    write_model("tiny-cpu", tiny_doc)
    model = resolve_one(project, "tiny-cpu")
    assert model.served_name == "org/tiny:latest"
    # The HF id of tiny-cpu is a local path: not a name clients know, so not served as one.
    assert model.argv[-2:] == ["--served-model-name", "org/tiny:latest"]


def test_a_hub_id_is_served_as_a_second_name(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["command"] = "vllm serve Qwen/Qwen2.5-1.5B-Instruct --max-model-len 512"
    write_model("tiny-cpu", tiny_doc)
    model = resolve_one(project, "tiny-cpu")
    assert model.served_names == ["tiny-cpu", "Qwen/Qwen2.5-1.5B-Instruct"]
    assert model.argv[-3:] == ["--served-model-name", "tiny-cpu", "Qwen/Qwen2.5-1.5B-Instruct"]


def test_max_tokens_from_vars_env_that_fills_the_context_is_an_error(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    del tiny_doc["litellm"]["max_tokens"]  # vars.env says 128K; the model allows 512
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(ConfgenError) as info:
        resolve_one(project, "tiny-cpu")
    assert str(info.value) == (
        "models/tiny-cpu.yml: litellm.max_tokens: 131072 (from vars.env) leaves no room for the "
        "prompt within --max-model-len 512: every request that takes the default would fail "
        "(set litellm.max_tokens in models/tiny-cpu.yml below 512, e.g. 128)"
    )
    assert info.value.exit_code == 1


@pytest.mark.parametrize("max_tokens", [512, 1024, "1K"])
def test_max_tokens_equal_or_above_the_context_from_the_model_file(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], max_tokens: object
) -> None:
    tiny_doc["litellm"]["max_tokens"] = max_tokens
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(ConfgenError, match=r"\(from models/tiny-cpu.yml\) leaves no room"):
        resolve_one(project, "tiny-cpu")


def test_max_tokens_check_reads_the_underscore_spelling(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["command"] = "vllm serve m --max_model_len=4096"
    tiny_doc["litellm"]["max_tokens"] = 4096
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(ConfgenError, match=r"within --max-model-len 4096: .* below 4096, e\.g\. 1024"):
        resolve_one(project, "tiny-cpu")


@pytest.mark.parametrize("command", ["vllm serve m", "vllm serve m --max-model-len auto"])
def test_without_a_numeric_max_model_len_there_is_no_check(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], command: str
) -> None:
    tiny_doc["command"] = command
    del tiny_doc["litellm"]["max_tokens"]
    write_model("tiny-cpu", tiny_doc)
    model = resolve_one(project, "tiny-cpu")
    assert model.max_model_len is None
    assert model.sampling.max_tokens == 131072


def test_a_bad_command_is_reported_at_merge(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["command"] = "python serve x"
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(ConfgenError) as info:
        resolve_one(project, "tiny-cpu")
    assert str(info.value) == (
        "models/tiny-cpu.yml: command: must start with 'vllm serve <model>', got 'python serve' "
        "(write: vllm serve <huggingface-id or path> [flags])"
    )


def test_the_result_is_frozen(tiny: ResolvedModel) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.sampling.temperature = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.command.model = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        tiny.info.description = "changed"  # type: ignore[misc]


def test_merge_takes_plain_objects(project: Project) -> None:
    model = ModelFile.model_validate(
        {"info": {"description": "d", "params": "1B", "weights_gb": 1, "gpu_memory_gb": 2},
         "command": "vllm serve org/m"}
    )
    resolved = merge("m", model, load_vars(project, {}), "models/m.yml")
    assert resolved.argv == [
        "vllm", "serve", "org/m", "--host", "127.0.0.1", "--port", "8000", "--served-model-name", "m", "org/m",
    ]
    assert resolved.info.device == "gpu"
    assert resolved.limits.timeout == 600.0


def test_selection_usage_errors(project: Project) -> None:
    with pytest.raises(ConfgenError) as info:
        select(project, [], {})
    assert (str(info.value), info.value.exit_code) == (
        "--model: no model selected (name at least one with --model)", 2
    )
    with pytest.raises(ConfgenError) as info:
        select(project, ["tiny-cpu", "tiny-cpu"], {})
    assert (str(info.value), info.value.exit_code) == (
        "--model: selected more than once: tiny-cpu", 2
    )
