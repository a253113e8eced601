"""Request parsing for the simulator: models, lengths, streaming options, tool-call triggers, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from confgen.sim.config import SimConfig
from confgen.sim.parse import ApiError, ToolCall, parse_json, parse_request

CONFIG = SimConfig(served_model_names=("a", "b"), max_model_len=100)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]


def chat(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "a", "messages": [{"role": "user", "content": content}], **extra}


def error_of(kind: str, doc: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_request(kind, doc, CONFIG)  # type: ignore[arg-type]
    return caught.value


def test_chat_request_fields() -> None:
    req = parse_request("chat", chat("x" * 40, max_tokens=5, stream=True,
                                     stream_options={"include_usage": True}), CONFIG)
    assert (req.model, req.prompt_tokens, req.max_tokens, req.stream, req.include_usage) == ("a", 10, 5, True, True)
    assert req.tool_call is None


def test_max_completion_tokens_wins_and_model_defaults_to_first_name() -> None:
    doc = chat(max_completion_tokens=3, max_tokens=9)
    del doc["model"]
    req = parse_request("chat", doc, CONFIG)
    assert (req.model, req.max_tokens) == ("a", 3)


def test_text_parts_are_counted() -> None:
    req = parse_request("chat", chat([{"type": "text", "text": "y" * 80}]), CONFIG)
    assert req.prompt_tokens == 20


def test_include_usage_needs_stream() -> None:
    assert not parse_request("chat", chat(stream_options={"include_usage": True}), CONFIG).include_usage


def test_completion_prompts() -> None:
    assert parse_request("completion", {"model": "b", "prompt": "z" * 8}, CONFIG).prompt_tokens == 2
    assert parse_request("completion", {"model": "b", "prompt": [1, 2, 3, 4, 5]}, CONFIG).prompt_tokens == 5


def test_responses_input_string_and_items() -> None:
    assert parse_request("responses", {"model": "a", "input": "q" * 12, "max_output_tokens": 4},
                         CONFIG).prompt_tokens == 3
    items = [{"role": "user", "content": [{"type": "input_text", "text": "call tool ls"}]}]
    req = parse_request("responses", {"model": "a", "input": items,
                                      "tools": [{"type": "function", "name": "ls"}]}, CONFIG)
    assert req.tool_call == ToolCall("ls", "{}")


def test_unknown_model_is_404_in_openai_shape() -> None:
    error = error_of("chat", {**chat(), "model": "nope"})
    assert error.status == 404
    assert error.body() == {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError",
                                      "param": "model", "code": 404}}


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON in the request body"),
    (b"[1, 2]", "the request body must be a JSON object"),
])
def test_malformed_json_is_400(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(body)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(("kind", "doc", "fragment"), [
    ("chat", {"model": "a"}, "messages: expected a non-empty list"),
    ("chat", {"model": "a", "messages": []}, "messages: expected a non-empty list"),
    ("chat", chat(max_tokens=0), "max_tokens: expected an integer >= 1"),
    ("chat", chat(max_tokens="5"), "max_tokens: expected an integer >= 1"),
    ("completion", {"model": "a"}, "prompt: expected a non-empty string"),
    ("responses", {"model": "a"}, "input: expected a string or a non-empty list"),
    ("chat", chat("x" * 404), "maximum context length is 100 tokens. However, your request has 101 input tokens"),
    ("chat", chat("x" * 40, max_tokens=91), "'max_tokens' or 'max_completion_tokens' is too large: 91"),
    ("chat", chat(tools="no"), "tools: expected a list"),
])
def test_bad_requests_are_400_with_a_message(kind: str, doc: dict[str, Any], fragment: str) -> None:
    error = error_of(kind, doc)
    assert error.status == 400
    assert fragment in error.message


def test_prompt_exactly_at_the_limit_is_accepted() -> None:
    assert parse_request("chat", chat("x" * 360, max_tokens=10), CONFIG).prompt_tokens == 90


def test_call_tool_trigger_with_json_arguments() -> None:
    req = parse_request("chat", chat('please call tool get_weather with {"city": "Paris", "days": 2} now',
                                     tools=TOOLS), CONFIG)
    assert req.tool_call == ToolCall("get_weather", json.dumps({"city": "Paris", "days": 2}, separators=(",", ":")))


def test_call_tool_trigger_without_arguments_gives_empty_object() -> None:
    assert parse_request("chat", chat("call tool ls", tools=TOOLS), CONFIG).tool_call == ToolCall("ls", "{}")


@pytest.mark.parametrize("doc", [
    chat("call tool ls"),                                     # no tools declared
    chat("call tool rm", tools=TOOLS),                        # not a declared tool
    chat("call tool ls", tools=TOOLS, tool_choice="none"),    # tools switched off
    chat("just talk", tools=TOOLS),                           # no trigger
])
def test_no_tool_call(doc: dict[str, Any]) -> None:
    assert parse_request("chat", doc, CONFIG).tool_call is None


def test_trigger_only_when_the_last_message_is_the_users() -> None:
    doc = chat("call tool ls", tools=TOOLS)
    doc["messages"] += [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                                              "function": {"name": "ls", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "1", "content": "a.txt"}]
    assert parse_request("chat", doc, CONFIG).tool_call is None


def test_trailing_system_messages_do_not_hide_the_users_trigger() -> None:
    # Claude Code ends each request with a system message (its environment) after the user's turn.
    doc = chat("call tool ls", tools=TOOLS)
    doc["messages"].append({"role": "system", "content": "# Environment"})
    assert parse_request("chat", doc, CONFIG).tool_call == ToolCall("ls", "{}")
    # ... which LiteLLM's /v1/messages translation turns into a second user message.
    doc["messages"][-1] = {"role": "user", "content": "Operator note: # Environment"}
    assert parse_request("chat", doc, CONFIG).tool_call == ToolCall("ls", "{}")
    # System text is not the user's: a trigger there does not count.
    assert parse_request("chat", {"model": "a", "tools": TOOLS, "messages": [
        {"role": "system", "content": "call tool ls"}, {"role": "user", "content": "hi"}]}, CONFIG).tool_call is None
    items = [{"role": "user", "content": "call tool ls"}, {"role": "developer", "content": "be brief"}]
    req = parse_request("responses", {"model": "a", "input": items, "tools": [{"type": "function", "name": "ls"}]},
                        CONFIG)
    assert req.tool_call == ToolCall("ls", "{}")


def test_tool_choice_names_the_function() -> None:
    doc = chat('weather {"city": "Oslo"}', tools=TOOLS,
               tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert parse_request("chat", doc, CONFIG).tool_call == ToolCall("get_weather", '{"city":"Oslo"}')


def test_tool_choice_required_picks_the_first_tool() -> None:
    assert parse_request("chat", chat("hi", tools=TOOLS, tool_choice="required"), CONFIG).tool_call == \
        ToolCall("get_weather", "{}")


def test_tool_choice_naming_an_undeclared_function_is_400() -> None:
    error = error_of("chat", chat("hi", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}}))
    assert error.status == 400
    assert "not in tools" in error.message
