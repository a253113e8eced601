"""confgen.command: the `command` section -> vLLM argv, with the launcher's dynamic arguments."""

from __future__ import annotations

import pytest

from confgen.command import (
    ServeCommand,
    final_argv,
    is_hub_id,
    normalise_flag,
    parse_command,
    served_names,
    strip_flags,
)
from confgen.errors import ConfgenError

MULTILINE = """\
vllm serve Qwen/Qwen3-8B \\
  --max-model-len 32768 \\
  # tensor parallel is 1 on a single GPU; kept for the next box \\
  # --tensor-parallel-size 2 \\
  --gpu-memory-utilization 0.9 \\
  --chat-template-content-format "openai" \\
  --override-generation-config '{"temperature": 0.6}'   # JSON stays one word
  --enable-prefix-caching
"""


def test_multiline_command_with_continuations_and_comments() -> None:
    cmd = parse_command(MULTILINE, "models/q.yml: command")
    assert cmd == ServeCommand(
        model="Qwen/Qwen3-8B",
        args=(
            "--max-model-len", "32768",
            "--gpu-memory-utilization", "0.9",
            "--chat-template-content-format", "openai",
            "--override-generation-config", '{"temperature": 0.6}',
            "--enable-prefix-caching",
        ),
    )


def test_a_commented_out_flag_keeping_its_backslash_hides_only_itself() -> None:
    cmd = parse_command("vllm serve m \\\n  # --dtype half \\\n  --enforce-eager \\\n  --seed 1\n", "w")
    assert cmd.args == ("--enforce-eager", "--seed", "1")


def test_windows_line_endings() -> None:
    assert parse_command("vllm serve m \\\r\n  --seed 1\r\n", "w").args == ("--seed", "1")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            "python serve x",
            "models/x.yml: command: must start with 'vllm serve <model>', got 'python serve' "
            "(write: vllm serve <huggingface-id or path> [flags])",
        ),
        (
            "vllm --model m",
            "models/x.yml: command: must start with 'vllm serve <model>', got 'vllm --model' "
            "(write: vllm serve <huggingface-id or path> [flags])",
        ),
        (
            "# vllm serve m",
            "models/x.yml: command: must start with 'vllm serve <model>', got '(empty)' "
            "(write: vllm serve <huggingface-id or path> [flags])",
        ),
        (
            "vllm serve",
            "models/x.yml: command: 'vllm serve' needs the model (a HuggingFace id or a path) first "
            "(write: vllm serve <huggingface-id or path> [flags])",
        ),
        (
            "vllm serve --model m --dtype half",
            "models/x.yml: command: 'vllm serve' needs the model (a HuggingFace id or a path) first "
            "(write: vllm serve <huggingface-id or path> [flags])",
        ),
        (
            "vllm serve m --chat-template 'unclosed",
            "models/x.yml: command: cannot split the command: No closing quotation "
            "(check quotes and backslashes)",
        ),
        (
            'vllm serve m --chat-template "unclosed',
            "models/x.yml: command: cannot split the command: No closing quotation "
            "(check quotes and backslashes)",
        ),
        (
            "vllm serve m \\",
            "models/x.yml: command: cannot split the command: No escaped character "
            "(check quotes and backslashes)",
        ),
    ],
)
def test_commands_that_are_not_vllm_serve_model(command: str, message: str) -> None:
    with pytest.raises(ConfgenError) as info:
        parse_command(command, "models/x.yml: command")
    assert str(info.value) == message
    assert info.value.exit_code == 1


DYNAMIC_IN_FILE = (
    "vllm serve m --port 9 --dtype half --port=10 --host 0.0.0.0 --served-model-name a b "
    "--served_model_name x --api-key sk-secret --api_key=sk-other --seed 1 --enforce-eager"
)


def test_dynamic_flags_in_the_file_are_replaced_by_exactly_one_set() -> None:
    argv = final_argv(parse_command(DYNAMIC_IN_FILE, "w"), "127.0.0.1", 8001, ["tiny"])
    assert argv == [
        "vllm", "serve", "m", "--dtype", "half", "--seed", "1", "--enforce-eager",
        "--host", "127.0.0.1", "--port", "8001", "--served-model-name", "tiny",
    ]
    assert not any("sk-" in arg or "api" in arg for arg in argv)


def test_several_served_names() -> None:
    argv = final_argv(parse_command("vllm serve m", "w"), "::", 8000, ["a", "b"])
    assert argv == ["vllm", "serve", "m", "--host", "::", "--port", "8000", "--served-model-name", "a", "b"]


@pytest.mark.parametrize(("model", "names"), [
    ("Qwen/Qwen2.5-1.5B-Instruct", ["q", "Qwen/Qwen2.5-1.5B-Instruct"]),
    ("gpt2", ["q", "gpt2"]),
    ("q", ["q"]),  # the served name already is the id: not twice
    (".local/models/tiny-cpu", ["q"]),  # local paths are not names clients know
    ("/models/qwen", ["q"]),
    ("./qwen", ["q"]),
    ("~/models/qwen", ["q"]),
    ("a/b/c", ["q"]),
    ("org/bad..name", ["q"]),
    ("org/name-", ["q"]),
    ("org/" + "x" * 93, ["q"]),  # longer than the hub allows
])
def test_served_names_add_the_hub_id_only(model: str, names: list[str]) -> None:
    assert served_names("q", model) == names
    assert is_hub_id(model) == (len(names) == 2 or model == "q")


def test_short_options_after_dynamic_flags_are_kept() -> None:
    # vLLM has short options (-tp, -pp, -O3): they end the list of served names, as in argparse.
    cmd = parse_command("vllm serve m --served-model-name a b -tp 2 --port 9 -O3 --seed -1", "w")
    assert final_argv(cmd, "h", 1, ["s"]) == [
        "vllm", "serve", "m", "-tp", "2", "-O3", "--seed", "-1",
        "--host", "h", "--port", "1", "--served-model-name", "s",
    ]


def test_strip_flags_reports_what_it_removed() -> None:
    kept, removed = strip_flags(
        ("--port", "9", "--x", "--served-model-name", "a", "b", "--api-key=k", "--y", "1"),
        {"--port": "1", "--served-model-name": "+", "--api-key": "+"},
    )
    assert kept == ["--x", "--y", "1"]
    assert removed == ["--port", "--served-model-name", "--api-key"]


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (("--max_model_len=4096",), "--max-model-len", "4096"),
        (("--max-model-len", "4096"), "--max-model-len", "4096"),
        (("--max-model-len", "1", "--max_model_len", "2"), "--max-model-len", "2"),  # the last wins
        (("--max-model-len=",), "--max-model-len", ""),
        (("--enforce-eager", "--seed", "1"), "--enforce-eager", ""),
        (("--max-model-len",), "--max-model-len", ""),
        (("--seed", "1"), "--max-model-len", None),
    ],
)
def test_flag_value(args: tuple[str, ...], flag: str, value: str | None) -> None:
    cmd = ServeCommand("m", args)
    assert cmd.flag_value(flag) == value
    assert cmd.has_flag(flag) is (value is not None)


@pytest.mark.parametrize(
    ("token", "normal"),
    [("--max_model_len", "--max-model-len"), ("--max-model-len", "--max-model-len"),
     ("-tp", "-tp"), ("value_x", "value_x")],
)
def test_normalise_flag(token: str, normal: str) -> None:
    assert normalise_flag(token) == normal
