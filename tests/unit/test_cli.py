"""The click layer (confgen.cli, confgen.commands.*): exact output and exit codes.

Exit codes: 0 ok, 1 invalid input, 2 usage. Problems go to stderr, results to stdout.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from confgen.cli import cli
from confgen.errors import Problem
from confgen.load import Project

RunCli = Callable[..., Result]
WriteModel = Callable[[str, Any], Path]

MISSING_SECRETS = (
    "note: secret LITELLM_MASTER_KEY is not in secrets/ yet (./runMe.sh creates LITELLM_MASTER_KEY "
    "and VLLM_API_KEY; other secrets: write the file)\n"
    "note: secret VLLM_API_KEY is not in secrets/ yet (./runMe.sh creates LITELLM_MASTER_KEY and "
    "VLLM_API_KEY; other secrets: write the file)\n"
)
TINY_ARGV = (
    "vllm serve .local/models/tiny-cpu --max-model-len 512 --dtype bfloat16 --enforce-eager "
    "--host 127.0.0.1 --port 8000 --served-model-name tiny-cpu"
)


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- check ------------------------------------------------------------------------------------


def test_check_ok(run_cli: RunCli) -> None:
    result = run_cli("check", "--no-vllm")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        MISSING_SECRETS + "ok: 1 models, vars.env and litellm_config.template.yaml are valid\n"
    )


def test_check_ok_with_secrets(run_cli: RunCli, write_secret: Callable[[str, str], Path]) -> None:
    write_secret("LITELLM_MASTER_KEY", "sk-master-0123456789")
    write_secret("VLLM_API_KEY", "sk-vllm-0123456789")
    result = run_cli("check", "--no-vllm")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "note: secrets referenced by the config are present: LITELLM_MASTER_KEY, VLLM_API_KEY\n"
        "ok: 1 models, vars.env and litellm_config.template.yaml are valid\n"
    )


@dataclass
class _StubReport:
    summary: str
    problems: list[Problem] = field(default_factory=list)


def test_the_check_flag_is_the_check_command(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    # The vLLM parser check is tested elsewhere; here it only has to be called the same way.
    calls: list[list[str]] = []

    def stub(project: Project, models: Any) -> _StubReport:
        calls.append([m.name for m in models])
        return _StubReport("vLLM check: stubbed")

    monkeypatch.setattr("confgen.commands.check.check_commands", stub)
    by_flag = run_cli("--check")
    by_command = run_cli("check")
    assert calls == [["tiny-cpu"], ["tiny-cpu"]]
    assert (by_flag.exit_code, by_flag.stdout, by_flag.stderr) == (
        by_command.exit_code, by_command.stdout, by_command.stderr,
    )
    assert by_flag.exit_code == 0
    assert by_flag.stdout.endswith(
        "note: vLLM check: stubbed\nok: 1 models, vars.env and litellm_config.template.yaml are valid\n"
    )


def test_check_fails_on_a_vllm_problem(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _StubReport("vLLM check: 1 command rejected",
                         [Problem("models/tiny-cpu.yml: command", "unknown flag --bogus")])
    monkeypatch.setattr("confgen.commands.check.check_commands", lambda project, models: report)
    result = run_cli("check")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "error: models/tiny-cpu.yml: command: unknown flag --bogus"
    )


def test_a_broken_model_file_fails_check(
    run_cli: RunCli, project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["litellm"]["max_tokens"] = "lots"
    tiny_doc["serve"]["port"] = 8001
    write_model("qwen", tiny_doc)
    write_model("broken", "info: [\n")
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: models/broken.yml: YAML syntax error at line 2, column 1: expected the node "
        "content, but found '<stream end>' (fix the YAML)\n"
        "error: models/qwen.yml: litellm.max_tokens: expected an integer or a size like 128K, "
        "got 'lots'\n"
        f"check failed: 2 problem(s) in {project.root}\n"
    )
    assert result.stdout == MISSING_SECRETS
    assert_no_traceback(result)


def test_cross_file_problems_fail_check(
    run_cli: RunCli, project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    write_model("other", tiny_doc)
    project.vars_env.write_text("HF_TOKEN=abc\n")
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: vars.env: line 1: HF_TOKEN: looks like a secret (its name has TOKEN): its value would be copied "
        "in clear into generated files such as models.yml (put it in secrets/HF_TOKEN instead and leave HF_TOKEN "
        "empty here: vLLM gets it from that file)\n"
        "error: models/tiny-cpu.yml: serve.port: port 8000 is also used by models/other.yml "
        "(give each model its own port (serve.port in the model file))\n"
        f"check failed: 2 problem(s) in {project.root}\n"
    )


def test_a_bad_vars_env_line_fails_check_with_one_message(run_cli: RunCli, project: Project) -> None:
    project.vars_env.write_text("LITELLM_PORT=4000\nthis is not\n")
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: vars.env: line 2: cannot parse 'this is not' (write KEY=value)\n"
        f"check failed: 1 problem(s) in {project.root}\n"
    )


def test_an_empty_catalog_fails_check(run_cli: RunCli, project: Project) -> None:
    (project.models_dir / "tiny-cpu.yml").unlink()
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: models: the catalog is empty: no models/*.yml (add a model file, e.g. copy "
        "models/tiny-cpu.yml)\n"
        f"check failed: 1 problem(s) in {project.root}\n"
    )


def test_the_process_environment_is_read(run_cli: RunCli) -> None:
    result = run_cli("check", "--no-vllm", env={"LITELLM_PORT": "http"})
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "error: environment: LITELLM_PORT: Input should be a valid integer, unable to parse string "
        "as an integer, got 'http'"
    )


# --- list -------------------------------------------------------------------------------------


def test_list(run_cli: RunCli, write_model: WriteModel, tiny_doc: dict[str, Any]) -> None:
    tiny_doc["info"].update(device="gpu", weights_gb=16.4, gpu_memory_gb=24)
    tiny_doc["serve"]["port"] = 8001
    tiny_doc["command"] = "vllm serve Qwen/Qwen3-8B"
    write_model("qwen3-8b", tiny_doc)
    result = run_cli("list")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        "NAME      DEVICE  PORT  WEIGHTS   NEEDS  HF ID\n"
        "qwen3-8b  gpu     8001  16.4 GB   24 GB  Qwen/Qwen3-8B\n"
        "tiny-cpu  cpu     8000  0.005 GB  0 GB   .local/models/tiny-cpu\n"
    )


def test_list_shows_the_valid_models_and_reports_the_rest(run_cli: RunCli, write_model: WriteModel) -> None:
    write_model("broken", "")
    result = run_cli("list")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1].startswith("tiny-cpu  cpu")
    assert result.stderr == (
        "error: models/broken.yml: file is empty (add the info, command, env and litellm sections)\n"
    )


# --- render -----------------------------------------------------------------------------------


def test_render_writes_both_files(run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("render", "--model", "tiny-cpu", "--out", str(out))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == f"wrote {out / 'models.yml'}\nwrote {out / 'config.yaml'}\n"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "models.yml"]
    assert '"hosted_vllm/tiny-cpu"' in (out / "config.yaml").read_text()


def test_render_refuses_a_model_selected_twice(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("render", "--model", "tiny-cpu", "--model", "tiny-cpu", "--out", str(tmp_path))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --model: selected more than once: tiny-cpu\n"


def test_render_of_an_invalid_model_writes_nothing(
    run_cli: RunCli, write_model: WriteModel, tmp_path: Path
) -> None:
    write_model("broken", "info: {}\ncommand: vllm serve m\n")
    out = tmp_path / "out"
    result = run_cli("render", "--model", "broken", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr == "".join(
        f"error: models/broken.yml: info.{key}: required key is missing (add it)\n"
        for key in ("description", "params", "weights_gb", "gpu_memory_gb")
    )
    assert not out.exists()
    assert_no_traceback(result)


# --- command ----------------------------------------------------------------------------------


def test_command_prints_the_argv(run_cli: RunCli) -> None:
    result = run_cli("command", "--model", "tiny-cpu")
    assert (result.exit_code, result.stdout, result.stderr) == (0, TINY_ARGV + "\n", "")


def test_command_quotes_for_the_shell_and_hides_the_api_key(
    run_cli: RunCli, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["command"] = (
        "vllm serve m --api-key sk-secret --port 1 \\\n  --override-generation-config '{\"a\": 1}'\n"
    )
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("command", "--model", "tiny-cpu", env={"VLLM_HOST": "0.0.0.0"})
    assert result.exit_code == 0
    assert result.stdout == (
        "vllm serve m --override-generation-config '{\"a\": 1}' --host 0.0.0.0 --port 8000 "
        "--served-model-name tiny-cpu m\n"
    )
    assert shlex.split(result.stdout)[4] == '{"a": 1}'
    assert "sk-secret" not in result.output


def test_unknown_model(run_cli: RunCli) -> None:
    result = run_cli("command", "--model", "tiny-gpu")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: --model: unknown model 'tiny-gpu' (did you mean 'tiny-cpu'? known models: tiny-cpu)\n"
    )
    assert_no_traceback(result)


@pytest.mark.parametrize("name", ["../x", "a/b", "../models/tiny-cpu"])
def test_a_path_is_not_a_model_name(run_cli: RunCli, name: str) -> None:
    result = run_cli("command", "--model", name)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: --model: {name!r} is not a model name (use a file name from models/ without .yml "
        "(lowercase letters, digits, '.', '_', '-'); known: tiny-cpu)\n"
    )


@pytest.mark.parametrize("args", [["command"], ["render", "--out", "x"]])
def test_a_missing_model_option_is_a_usage_error(run_cli: RunCli, args: list[str]) -> None:
    result = run_cli(*args)
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Missing option '--model'.\n")


def test_an_unknown_command_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("chek")
    assert result.exit_code == 2
    assert "Error: No such command 'chek'." in result.stderr


# --- the group --------------------------------------------------------------------------------


def test_no_command_prints_the_help(run_cli: RunCli) -> None:
    result = run_cli()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: cli [OPTIONS] COMMAND [ARGS]...") or result.stdout.startswith(
        "Usage: cli [OPTIONS] [COMMAND] [ARGS]..."
    )
    for name in ("check", "command", "list", "render"):
        assert f"\n  {name} " in result.stdout


def test_the_root_comes_from_confgen_root(project: Project, tmp_path: Path) -> None:
    result = CliRunner(env={"CONFGEN_ROOT": str(project.root)}).invoke(cli, ["command", "--model", "tiny-cpu"])
    assert (result.exit_code, result.stdout) == (0, TINY_ARGV + "\n")
