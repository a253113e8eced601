"""confgen.render: config.yaml (LiteLLM) and models.yml from the merged selection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from confgen.catalog import Selection, select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.render import TARGETS, render_all, write_all
from confgen.render.models_yml import HEADER

WriteModel = Callable[[str, Any], Path]


def selection_of(project: Project, *names: str) -> Selection:
    return select(project, list(names or ["tiny-cpu"]), {})


def render_error(project: Project, *names: str) -> ConfgenError:
    with pytest.raises(ConfgenError) as info:
        render_all(selection_of(project, *names))
    return info.value


def test_targets_render_one_file_each(project: Project) -> None:
    assert list(TARGETS) == ["models.yml", "config.yaml"]
    assert list(render_all(selection_of(project))) == ["models.yml", "config.yaml"]


def test_config_yaml_is_litellm_config(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["litellm"].update(temperature=0.2, top_k=20, repetition_penalty=1.05, rpm=60)
    tiny_doc["serve"] = {"port": 8001, "served_name": "tiny"}
    write_model("tiny-cpu", tiny_doc)
    config = yaml.safe_load(render_all(selection_of(project))["config.yaml"])
    assert config["model_list"] == [
        {
            "model_name": "tiny",
            "litellm_params": {
                "model": "hosted_vllm/tiny",
                "api_base": "http://127.0.0.1:8001/v1",
                "api_key": "os.environ/VLLM_API_KEY",
                "temperature": 0.2,
                "top_p": 0.9,
                "max_tokens": 64,
                "extra_body": {"top_k": 20, "repetition_penalty": 1.05},
                "timeout": 120.0,
                "stream_timeout": 120.0,
                "max_parallel_requests": 16,
                "rpm": 60,
            },
            "model_info": {
                "description": "Tiny random-weight Llama for machines without a GPU and for "
                "end-to-end tests",
                "hf_id": ".local/models/tiny-cpu",
                "max_input_tokens": 512,
                "max_output_tokens": 64,
                # A lone replica (no deployments.yml): never benched (cooldown 0), see test_render_routing.py.
                "allowed_fails": 1,
                "cooldown_time": 0.0,
                "health_check_timeout": 20,
                "health_check_max_tokens": 1,
            },
        }
    ]
    assert config["general_settings"] == {"master_key": "os.environ/LITELLM_MASTER_KEY",
                                          "custom_auth": "confgen.gateway.auth.user_api_key_auth"}
    assert config["litellm_settings"]["request_timeout"] == 600.0


def test_two_models_in_the_order_selected(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["serve"]["port"] = 8001
    write_model("b-model", tiny_doc)
    config = yaml.safe_load(render_all(selection_of(project, "tiny-cpu", "b-model"))["config.yaml"])
    assert [(e["model_name"], e["litellm_params"]["api_base"]) for e in config["model_list"]] == [
        ("tiny-cpu", "http://127.0.0.1:8000/v1"),
        ("b-model", "http://127.0.0.1:8001/v1"),
    ]


def test_no_value_can_break_the_yaml(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    nasty = "a: b\n- c # d {{ e }} 'f\" \\g ünï"
    tiny_doc["info"]["description"] = nasty
    write_model("tiny-cpu", tiny_doc)
    files = render_all(selection_of(project))
    config = yaml.safe_load(files["config.yaml"])
    assert config["model_list"][0]["model_info"]["description"] == nasty
    assert yaml.safe_load(files["models.yml"])["models"]["tiny-cpu"]["description"] == nasty


def test_models_yml_is_the_merged_selection(project: Project) -> None:
    text = render_all(selection_of(project))["models.yml"]
    assert text.startswith(HEADER)
    entry = yaml.safe_load(text)["models"]["tiny-cpu"]
    assert entry["argv"] == [
        "vllm", "serve", ".local/models/tiny-cpu", "--max-model-len", "512", "--dtype", "bfloat16",
        "--enforce-eager", "--host", "127.0.0.1", "--port", "8000", "--served-model-name", "tiny-cpu",
    ]
    assert entry["env"]["HF_HUB_OFFLINE"] == "1"
    assert entry["env"]["NCCL_IB_DISABLE"] == "1"
    assert entry["sampling"]["max_tokens"] == 64
    assert entry["limits"] == {"max_parallel_requests": 16, "timeout": 120.0}
    assert entry["sources"]["max_tokens"] == "models/tiny-cpu.yml"
    assert entry["sources"]["temperature"] == "vars.env"


def test_secret_values_never_appear(
    project: Project, write_secret: Callable[[str, str], Path]
) -> None:
    write_secret("VLLM_API_KEY", "sk-vllm-0123456789")
    write_secret("LITELLM_MASTER_KEY", "sk-master-0123456789")
    for text in render_all(selection_of(project)).values():
        assert "0123456789" not in text


def test_a_secret_value_written_into_a_model_file_is_refused(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any],
    write_secret: Callable[[str, str], Path], tmp_path: Path,
) -> None:
    write_secret("HF_TOKEN", "hf_0123456789abcdef")
    tiny_doc["info"]["description"] = "my token is hf_0123456789abcdef"
    write_model("tiny-cpu", tiny_doc)
    error = render_error(project)
    assert str(error) == (
        "models.yml: would contain the value of secret HF_TOKEN "
        "(reference it as os.environ/HF_TOKEN instead of writing its value)"
    )
    out = tmp_path / "out"
    with pytest.raises(ConfgenError):
        write_all(selection_of(project), out)
    assert not out.exists()


def test_short_secret_values_are_not_searched(
    project: Project, write_secret: Callable[[str, str], Path]
) -> None:
    write_secret("HF_TOKEN", "tiny")  # would match the model's name
    assert "tiny" in render_all(selection_of(project))["config.yaml"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "model_list:\n{% for m in models %}\n  - model_name: {{ m.served_name | tojson }\n"
            "{% endfor %}\n",
            "litellm_config.template.yaml: line 3: template syntax error: unexpected '}'",
        ),
        (
            "model_list:\n{% for m in models %}\n  - model_name: 1\n{% endfor\n",
            "litellm_config.template.yaml: line 4: template syntax error: unexpected end of "
            "template, expected 'end of statement block'.",
        ),
        (
            "model_list:\n{% for m in models %}\n  - model_name: {{ m.nope | tojson }}\n"
            "{% endfor %}\n",
            "litellm_config.template.yaml: template uses an unknown value: 'confgen.merge."
            "ResolvedModel object' has no attribute 'nope' (use models[i].<field>, settings.<NAME> or "
            "routing.<field>)",
        ),
        (
            "model_list: []\nx: {{ settings.NOPE }}\n",
            "litellm_config.template.yaml: template uses an unknown value: 'confgen.schema.Settings "
            "object' has no attribute 'NOPE' (use models[i].<field>, settings.<NAME> or routing.<field>)",
        ),
        (
            "model_list:\n{% for m in models %}\n  - model_name: {{ m.info | tojson }}\n"
            "{% endfor %}\n",
            "litellm_config.template.yaml: template error: tojson cannot write this value: Object "
            "of type Info is not JSON serializable (pass plain values (strings, numbers) through "
            "tojson)",
        ),
        (
            "model_list: 1\n",
            "litellm_config.template.yaml: the rendered config has no model_list "
            "(keep the model_list loop)",
        ),
        (
            "- model_list\n",
            "litellm_config.template.yaml: the rendered config has no model_list "
            "(keep the model_list loop)",
        ),
    ],
    ids=["bad-expression", "unclosed-block", "unknown-model-field", "unknown-setting",
         "not-json", "no-list", "not-a-mapping"],
)
def test_template_errors(project: Project, template: str, message: str) -> None:
    project.template.write_text(template, encoding="utf-8")
    assert str(render_error(project)) == message


def test_a_template_that_renders_invalid_yaml(project: Project) -> None:
    project.template.write_text("model_list: [\n", encoding="utf-8")
    assert str(render_error(project)).startswith(
        "litellm_config.template.yaml: renders to invalid YAML: while parsing a flow node"
    )


def test_a_missing_template(project: Project) -> None:
    project.template.unlink()
    assert str(render_error(project)) == (
        "litellm_config.template.yaml: cannot read the template: [Errno 2] No such file or "
        f"directory: '{project.template}' (restore it from git)"
    )


def test_write_all_writes_both_files(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out" / "deeper"
    written = write_all(selection_of(project), out)
    assert written == [out / "models.yml", out / "config.yaml"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "models.yml"]
    assert yaml.safe_load((out / "config.yaml").read_text())["model_list"][0]["model_name"] == "tiny-cpu"
