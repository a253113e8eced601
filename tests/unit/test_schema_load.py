"""confgen.schema + confgen.load: model files, model names, vars.env and secrets, read from disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confgen.catalog import load_all
from confgen.errors import EXIT_INVALID, EXIT_USAGE, ConfgenError
from confgen.load import Project, check_model_name, load_model_file, load_vars, read_secrets
from confgen.schema import ModelFile, Settings

WriteModel = Callable[[str, Any], Path]

DELETE = object()


def changed(doc: dict[str, Any], key_path: str, value: object) -> dict[str, Any]:
    """doc with `a.b.c` set to value (or removed, for DELETE)."""
    *parents, last = key_path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


def load_error(project: Project, path: Path) -> ConfgenError:
    with pytest.raises(ConfgenError) as info:
        load_model_file(project, path)
    return info.value


# --- model files -------------------------------------------------------------------------------


def test_the_valid_file_loads(project: Project) -> None:
    model = load_model_file(project, project.models_dir / "tiny-cpu.yml")
    assert isinstance(model, ModelFile)
    assert model.info.device == "cpu"
    assert model.serve.port == 8000
    assert model.serve.served_name is None
    assert model.env == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    assert model.litellm.max_tokens == 64
    assert model.litellm.temperature is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "info:\n  description: x\n params: y\n",
            "models/x.yml: YAML syntax error at line 3, column 2: expected <block end>, "
            "but found '<block mapping start>' (fix the YAML)",
        ),
        (
            "info: [a, b\ncommand: vllm serve m\n",
            "models/x.yml: YAML syntax error at line 2, column 8: expected ',' or ']', "
            "but got ':' (fix the YAML)",
        ),
        (
            "[" * 5000,
            "models/x.yml: YAML is nested too deeply to read (fix the YAML)",
        ),
        ("", "models/x.yml: file is empty (add the info, command, env and litellm sections)"),
        (
            "# only a comment\n",
            "models/x.yml: file is empty (add the info, command, env and litellm sections)",
        ),
        (
            "- info\n- command\n",
            "models/x.yml: expected a mapping of sections, got list (see models/tiny-cpu.yml)",
        ),
        (
            "vllm serve m\n",
            "models/x.yml: expected a mapping of sections, got str (see models/tiny-cpu.yml)",
        ),
        (
            "info: a model\ncommand: vllm serve m\n",
            "models/x.yml: info: Input should be a valid dictionary or instance of Info, "
            "got 'a model'",
        ),
        (
            "1: a\n",
            "models/x.yml: info: required key is missing (add it)\n"
            "models/x.yml: command: required key is missing (add it)\n"
            "models/x.yml: 1: Keys should be strings, got 1",
        ),
    ],
    ids=["syntax", "flow-syntax", "too-deep", "empty", "comment-only", "list", "scalar",
         "section-not-mapping", "int-key"],
)
def test_unreadable_files_say_where_and_how_to_fix(
    project: Project, write_model: WriteModel, text: str, message: str
) -> None:
    error = load_error(project, write_model("x", text))
    assert str(error) == message
    assert error.exit_code == EXIT_INVALID


@pytest.mark.parametrize(
    ("key_path", "value", "message"),
    [
        ("info", DELETE, "models/x.yml: info: required key is missing (add it)"),
        ("command", DELETE, "models/x.yml: command: required key is missing (add it)"),
        ("info.params", DELETE, "models/x.yml: info.params: required key is missing (add it)"),
        (
            "litellm.temprature",
            0.5,
            "models/x.yml: litellm.temprature: unknown key (did you mean 'temperature'? allowed: "
            "max_parallel_requests, max_tokens, messages_api, repetition_penalty, responses_api, rpm, "
            "temperature, timeout, top_k, top_p, tpm)",
        ),
        (
            "info.descripton",
            "x",
            "models/x.yml: info.descripton: unknown key (did you mean 'description'? allowed: "
            "build, description, device, gpu_memory_gb, notes, params, weights_gb)",
        ),
        (
            "serve.prot",
            8001,
            "models/x.yml: serve.prot: unknown key (did you mean 'port'? allowed: port, served_name)",
        ),
        (
            "environment",
            {},
            "models/x.yml: environment: unknown key (allowed: arch, command, env, info, litellm, serve)",
        ),
        (
            "litellm.temperature",
            "hot",
            "models/x.yml: litellm.temperature: Input should be a valid number, "
            "unable to parse string as a number, got 'hot'",
        ),
        (
            "litellm.temperature",
            3,
            "models/x.yml: litellm.temperature: Input should be less than or equal to 2, got 3",
        ),
        (
            "litellm.max_tokens",
            "lots",
            "models/x.yml: litellm.max_tokens: expected an integer or a size like 128K, got 'lots'",
        ),
        (
            "litellm.max_tokens",
            0,
            "models/x.yml: litellm.max_tokens: Input should be greater than or equal to 1, got 0",
        ),
        (
            "litellm.max_tokens",
            -1,
            "models/x.yml: litellm.max_tokens: expected a positive number, got -1",
        ),
        (
            "serve.port",
            70000,
            "models/x.yml: serve.port: Input should be less than or equal to 65535, got 70000",
        ),
        (
            "serve.served_name",
            "has space",
            "models/x.yml: serve.served_name: String should match pattern "
            "'^[A-Za-z0-9][A-Za-z0-9._:/-]*$', got 'has space'",
        ),
        (
            "info.device",
            "tpu",
            "models/x.yml: info.device: Input should be 'gpu' or 'cpu', got 'tpu'",
        ),
        (
            "info.notes",
            "one note",
            "models/x.yml: info.notes: Input should be a valid list, got 'one note'",
        ),
        (
            "env.HF_HUB_OFFLINE",
            True,
            'models/x.yml: env.HF_HUB_OFFLINE: expected a string, got the boolean True: '
            'quote it, e.g. "1"',
        ),
        (
            "env.1BAD",
            "x",
            "models/x.yml: env.1BAD.[key]: String should match pattern "
            "'^[A-Za-z_][A-Za-z0-9_]*$', got '1BAD'",
        ),
        (
            "info.build",
            "/usr/bin/make-weights",
            "models/x.yml: info.build: String should match pattern '^scripts/[A-Za-z0-9_.-]+\\.py$', "
            "got '/usr/bin/make-weights'",
        ),
        (
            "command",
            ["vllm", "serve", "m"],
            "models/x.yml: command: Input should be a valid string",
        ),
    ],
)
def test_invalid_documents_name_the_key(
    *,
    project: Project,
    write_model: WriteModel,
    tiny_doc: dict[str, Any],
    key_path: str,
    value: object,
    message: str,
) -> None:
    error = load_error(project, write_model("x", changed(tiny_doc, key_path, value)))
    assert str(error) == message
    assert error.exit_code == EXIT_INVALID


def test_every_problem_of_a_file_is_reported_at_once(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    changed(tiny_doc, "litellm.temperature", "hot")
    changed(tiny_doc, "serve.port", 0)
    error = load_error(project, write_model("x", tiny_doc))
    assert [p.where for p in error.problems] == [
        "models/x.yml: serve.port",
        "models/x.yml: litellm.temperature",
    ]


def test_unquoted_yes_in_env_is_a_boolean_and_refused(project: Project, write_model: WriteModel) -> None:
    text = (project.models_dir / "tiny-cpu.yml").read_text()
    path = write_model("x", text.replace('HF_HUB_OFFLINE: "1"', "HF_HUB_OFFLINE: yes"))
    assert str(load_error(project, path)) == (
        'models/x.yml: env.HF_HUB_OFFLINE: expected a string, got the boolean True: quote it, e.g. "1"'
    )


def test_env_numbers_become_strings_and_null_env_is_empty(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["env"] = {"VLLM_CPU_KVCACHE_SPACE": 4, "RATIO": 0.5}
    assert load_model_file(project, write_model("x", tiny_doc)).env == {
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "RATIO": "0.5",
    }
    tiny_doc["env"] = None
    assert load_model_file(project, write_model("x", tiny_doc)).env == {}


def test_sizes_are_accepted_in_model_files(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    changed(tiny_doc, "litellm.max_tokens", "32k")
    assert load_model_file(project, write_model("x", tiny_doc)).litellm.max_tokens == 32768


def test_a_file_that_is_not_utf8_is_reported(project: Project) -> None:
    path = project.models_dir / "x.yml"
    path.write_bytes(b"info: \xff\n")
    error = load_error(project, path)
    assert str(error).startswith("models/x.yml: cannot read: 'utf-8' codec can't decode byte 0xff")


# --- model names -------------------------------------------------------------------------------


def test_a_known_name_gives_its_file(project: Project) -> None:
    assert check_model_name(project, "tiny-cpu") == project.models_dir / "tiny-cpu.yml"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tiny-gpu", "--model: unknown model 'tiny-gpu' (did you mean 'tiny-cpu'? known models: "
                     "big-gpu, tiny-cpu)"),
        ("tiny-cpu.yml", "--model: unknown model 'tiny-cpu.yml' (did you mean 'tiny-cpu'? known "
                         "models: big-gpu, tiny-cpu)"),
        ("qwen", "--model: unknown model 'qwen' (known models: big-gpu, tiny-cpu)"),
    ],
)
def test_unknown_models_list_the_known_ones(
    project: Project, write_model: WriteModel, name: str, message: str
) -> None:
    write_model("big-gpu", "")
    with pytest.raises(ConfgenError) as info:
        check_model_name(project, name, "--model")
    assert str(info.value) == message
    assert info.value.exit_code == EXIT_INVALID


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/etc/passwd", "Tiny-CPU", "", ".hidden"])
def test_paths_and_odd_names_are_not_model_names(project: Project, name: str) -> None:
    with pytest.raises(ConfgenError) as info:
        check_model_name(project, name, "--model")
    assert str(info.value) == (
        f"--model: {name!r} is not a model name (use a file name from models/ without .yml "
        "(lowercase letters, digits, '.', '_', '-'); known: tiny-cpu)"
    )
    assert info.value.exit_code == EXIT_USAGE


def test_an_empty_catalog_is_reported(project: Project) -> None:
    (project.models_dir / "tiny-cpu.yml").unlink()
    with pytest.raises(ConfgenError) as info:
        check_model_name(project, "tiny-cpu")
    assert str(info.value) == (
        "MODEL: unknown model 'tiny-cpu' (known models: none (models/ is empty))"
    )
    selection, problems = load_all(project, environ={})
    assert selection.models == ()
    assert [str(p) for p in problems] == [
        "models: the catalog is empty: no models/*.yml (add a model file, e.g. copy models/tiny-cpu.yml)"
    ]


# --- vars.env ----------------------------------------------------------------------------------


def vars_error(project: Project, environ: dict[str, str] | None = None) -> ConfgenError:
    with pytest.raises(ConfgenError) as info:
        load_vars(project, environ or {})
    return info.value


def test_the_repo_vars_env_is_valid(project: Project) -> None:
    gvars = load_vars(project, {})
    assert gvars.settings.LITELLM_MAX_TOKENS == 131072  # written as 128K
    assert gvars.env["NCCL_IB_DISABLE"] == "1"
    assert not set(gvars.env) & set(Settings.model_fields)
    assert gvars.sources["LITELLM_PORT"] == "vars.env"


def test_a_missing_vars_env_means_built_in_defaults(project: Project) -> None:
    project.vars_env.unlink()
    gvars = load_vars(project, {})
    assert gvars.settings == Settings()
    assert gvars.env == {}
    assert gvars.sources == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("this is not", "vars.env: line {n}: cannot parse 'this is not' (write KEY=value)"),
        ("=x", "vars.env: line {n}: cannot parse '=x' (write KEY=value)"),
        ("FOO='open", "vars.env: line {n}: cannot parse \"FOO='open\" (write KEY=value)"),
        ("BAD-KEY=1", "vars.env: BAD-KEY: not a valid variable name (use letters, digits, '_')"),
        ("1BAD=1", "vars.env: 1BAD: not a valid variable name (use letters, digits, '_')"),
        ("FOO", "vars.env: FOO: has no value (write FOO=value)"),
        (
            "LITELLM_TEMPRATURE=0.5",
            "vars.env: LITELLM_TEMPRATURE: unknown setting (did you mean LITELLM_TEMPERATURE?)",
        ),
        (
            "VLLM_PROT=8000",
            "vars.env: VLLM_PROT: unknown setting (did you mean VLLM_PORT?)",
        ),
        (
            "LITELLM_PORT=abc",
            "vars.env: LITELLM_PORT: Input should be a valid integer, unable to parse string as an "
            "integer, got 'abc'",
        ),
        (
            "LITELLM_PORT=0",
            "vars.env: LITELLM_PORT: Input should be greater than or equal to 1, got '0'",
        ),
        (
            "LITELLM_MAX_TOKENS=lots",
            "vars.env: LITELLM_MAX_TOKENS: expected an integer or a size like 128K, got 'lots'",
        ),
        (
            "LITELLM_TEMPERATURE=hot",
            "vars.env: LITELLM_TEMPERATURE: Input should be a valid number, unable to parse string "
            "as a number, got 'hot'",
        ),
    ],
)
def test_bad_vars_env_lines(project: Project, line: str, message: str) -> None:
    text = project.vars_env.read_text()
    n = len(text.splitlines()) + 1
    project.vars_env.write_text(text + line + "\n")
    error = vars_error(project)
    assert str(error) == message.format(n=n)
    assert error.exit_code == EXIT_INVALID


def test_a_bad_line_logs_nothing_of_its_own(
    project: Project, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    project.vars_env.write_text("this is not\n")
    vars_error(project)
    assert caplog.records == []
    assert capsys.readouterr() == ("", "")


def test_sizes_in_vars_env(write_vars: Callable[[str], Path], project: Project) -> None:
    write_vars("LITELLM_MAX_TOKENS=64K\n")
    assert load_vars(project, {}).settings.LITELLM_MAX_TOKENS == 65536


def test_the_process_environment_overrides_vars_env(
    write_vars: Callable[[str], Path], project: Project
) -> None:
    write_vars("LITELLM_PORT=4000\nNCCL_IB_DISABLE=1\nNCCL_DEBUG=WARN\n")
    gvars = load_vars(
        project, {"LITELLM_PORT": "5000", "VLLM_PORT": "9000", "NCCL_IB_DISABLE": "0", "HOME": "/x"}
    )
    assert gvars.settings.LITELLM_PORT == 5000
    assert gvars.settings.VLLM_PORT == 9000
    assert gvars.sources["LITELLM_PORT"] == "environment"
    assert gvars.sources["VLLM_PORT"] == "environment"
    # A passthrough variable of vars.env is overridden too; unrelated process variables are not
    # passed on (vLLM inherits the environment anyway).
    assert gvars.env == {"NCCL_IB_DISABLE": "0", "NCCL_DEBUG": "WARN"}
    assert gvars.sources["NCCL_DEBUG"] == "vars.env"


def test_a_bad_process_variable_is_blamed_on_the_environment(project: Project) -> None:
    assert str(vars_error(project, {"LITELLM_PORT": "abc"})) == (
        "environment: LITELLM_PORT: Input should be a valid integer, unable to parse string as an "
        "integer, got 'abc'"
    )


def test_load_vars_reads_os_environ_by_default(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_TOP_K", "7")
    assert load_vars(project).settings.LITELLM_TOP_K == 7


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_are_files_named_like_variables(
    project: Project, write_secret: Callable[[str, str], Path]
) -> None:
    write_secret("VLLM_API_KEY", "sk-vllm")
    write_secret("HF_TOKEN", "hf_abc")
    write_secret("README.md", "not a secret")
    write_secret(".gitkeep", "")
    (project.secrets_dir / "sub").mkdir()
    assert read_secrets(project) == {"HF_TOKEN": "hf_abc", "VLLM_API_KEY": "sk-vllm"}


def test_no_secrets_folder_means_no_secrets(project: Project) -> None:
    assert read_secrets(project) == {}


def test_a_secret_that_is_not_text_is_an_error_not_a_crash(project: Project) -> None:
    project.secrets_dir.mkdir()
    (project.secrets_dir / "HF_TOKEN").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfgenError) as info:
        read_secrets(project)
    assert str(info.value) == (
        "secrets/HF_TOKEN: cannot read: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte (write the value as one line of UTF-8 text)"
    )
