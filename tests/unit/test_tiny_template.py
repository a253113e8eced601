"""The tiny model's chat template (scripts/build_tiny_model.py) renders every message shape the OpenAI and
Anthropic APIs allow, as content strings or lists of parts (vLLM passes either, by the template's content
format). Rendered as transformers renders chat templates: a sandboxed Jinja environment with trim_blocks,
lstrip_blocks and a `tojson` filter (transformers/utils/chat_template_utils.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from build_tiny_model import CHAT_TEMPLATE

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = json.dumps
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, tools=tools, add_generation_prompt=True)


def parts(*texts: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": t} for t in texts]


@pytest.mark.parametrize("content", ["Be brief.\nReally.", parts("Be brief.", "Really.")])
def test_system_as_string_or_parts(content: str | list[dict[str, str]]) -> None:
    assert render([{"role": "system", "content": content}, {"role": "user", "content": parts("Hi")}]) == (
        "<|im_start|>system\nBe brief.\nReally.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_system_parts_with_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert render([{"role": "system", "content": parts("Be brief.")}, {"role": "user", "content": "Hi"}], tools) == (
        '<|im_start|>system\nBe brief.\n\nYou may call these tools:\n{"type": "function", "function": {"name": "f"}}'
        "\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("content", [None, "", parts()])
def test_tool_calls_and_results(content: object) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": content, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "c1", "content": parts("42")}]
    assert render(messages) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\n<tool_call>\n"
        '{"name": "f", "arguments": "{\\"x\\": 1}"}\n</tool_call><|im_end|>\n'
        "<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")
