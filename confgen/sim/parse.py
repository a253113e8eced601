"""Request bodies -> `SimRequest`, with vLLM's status codes and messages for bad requests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from confgen.sim.config import SimConfig
from confgen.sim.latency import count_tokens

Kind = Literal["chat", "completion", "responses"]
TOOL_TRIGGER = re.compile(r"call tool ([A-Za-z0-9_.\-]+)")


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "BadRequestError", param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class SimRequest:
    kind: Kind
    model: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool_call: ToolCall | None = None


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON in the request body: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return doc


def parse_request(kind: Kind, doc: dict[str, Any], config: SimConfig) -> SimRequest:
    model = _model(doc, config)
    given_tokens = 0
    if kind == "chat":
        messages = doc.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "messages: expected a non-empty list of message objects", param="messages")
        prompt = "\n".join(message_text(m) for m in messages)
        max_tokens = _max_tokens(doc, "max_completion_tokens", "max_tokens")
        tool_names = [t.get("function", {}).get("name") for t in _tools(doc)]
        last_user = _last_user_text(messages)
    elif kind == "completion":
        given_tokens, prompt = _completion_prompt(doc.get("prompt"))
        max_tokens = _max_tokens(doc, "max_tokens")
        tool_names, last_user = [], None
    else:
        items = doc.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ApiError(400, "input: expected a string or a non-empty list of input items", param="input")
        instructions = doc.get("instructions")
        head = [instructions] if isinstance(instructions, str) else []
        prompt = "\n".join(head + [message_text(i) for i in items])
        max_tokens = _max_tokens(doc, "max_output_tokens")
        tool_names = [t.get("name") for t in _tools(doc)]
        last_user = _last_user_text(items)
    prompt_tokens = given_tokens or count_tokens(prompt)
    _check_length(prompt_tokens, max_tokens, config.max_model_len)
    stream = doc.get("stream") is True
    options = doc.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    tool = _tool_call(doc, [n for n in tool_names if isinstance(n, str)], last_user)
    return SimRequest(kind, model, prompt_tokens, max_tokens, stream, include_usage, tool)


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: string content, text parts, tool call arguments, tool outputs."""
    parts: list[str] = []
    for key in ("content", "output"):
        value = message.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            parts.append(str(call["function"].get("arguments", "")))
    if isinstance(message.get("arguments"), str):
        parts.append(message["arguments"])
    return "\n".join(parts)


def _last_user_text(messages: list[dict[str, Any]]) -> str | None:
    """The text of the user's current turn: the user messages after the last assistant or tool message.

    Clients add context after the prompt (Claude Code ends with a system message holding its environment,
    which LiteLLM passes on as a user message), so the whole trailing run counts; system and developer
    text is skipped. None when the conversation ends with a tool result or an assistant message.
    """
    texts: list[str] = []
    for message in reversed(messages):
        role = message.get("role")
        if role not in ("user", "system", "developer"):
            break
        if role == "user":
            texts.append(message_text(message))
    return "\n".join(reversed(texts)) if texts else None


def _model(doc: dict[str, Any], config: SimConfig) -> str:
    model = doc.get("model")
    if model is None:
        return config.served_model_names[0]
    if model not in config.served_model_names:
        raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    return str(model)


def _max_tokens(doc: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = doc.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"{key}: expected an integer >= 1, got {value!r}", param=key)
        return value
    return None


def _completion_prompt(prompt: Any) -> tuple[int, str]:
    """(token count when given as token ids, else 0; the text). A list of prompts counts as one."""
    if isinstance(prompt, str) and prompt:
        return 0, prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return len(prompt), ""
        if all(isinstance(p, str) for p in prompt):
            return 0, "\n".join(prompt)
    raise ApiError(400, "prompt: expected a non-empty string, list of strings or list of token ids", param="prompt")


def _check_length(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    if prompt_tokens > max_model_len:
        raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, your request "
                       f"has {prompt_tokens} input tokens. Please reduce the length of the input messages.")
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise ApiError(400, f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                       f"maximum context length is {max_model_len} tokens and your request has {prompt_tokens} "
                       f"input tokens ({max_tokens} > {max_model_len} - {prompt_tokens}).", param="max_tokens")


def _tools(doc: dict[str, Any]) -> list[dict[str, Any]]:
    tools = doc.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ApiError(400, "tools: expected a list of tool objects", param="tools")
    return tools


def _tool_call(doc: dict[str, Any], names: list[str], last_user: str | None) -> ToolCall | None:
    """A tool call when `tool_choice` names a function, or the last message is the user's and says
    `call tool <name>` for a declared tool (so a tool result that follows gets a text answer)."""
    if not names:
        return None
    choice = doc.get("tool_choice")
    if choice == "none":
        return None
    text = last_user or ""
    if isinstance(choice, dict):
        function = choice.get("function")
        chosen = function.get("name") if isinstance(function, dict) else choice.get("name")
        if chosen not in names:
            raise ApiError(400, f"tool_choice: names the function {chosen!r}, which is not in tools",
                           param="tool_choice")
        return ToolCall(str(chosen), _json_object_in(text))
    match = TOOL_TRIGGER.search(text)
    if match and match.group(1) in names:
        return ToolCall(match.group(1), _json_object_in(text))
    if choice == "required":
        return ToolCall(names[0], _json_object_in(text))
    return None


def _json_object_in(text: str) -> str:
    """The first JSON object written in the text (compact), else "{}"."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":"))
        start = text.find("{", start + 1)
    return "{}"
