"""The relay lane's pure parts (confgen/gateway/lane.py): which API a route speaks, the model's sampling defaults
merged into a request body, and the usage read from an answer without parsing each streamed chunk.

Sampling defaults come from the deployment's litellm_params as the rendered config carries them
(litellm_config.template.yaml: temperature, top_p, max_tokens, and extra_body with vLLM's top_k and
repetition_penalty). LiteLLM's path sends them with the client's values winning (litellm/router.py
`_acompletion`: `{**deployment litellm_params, **request kwargs}`); so does `merged`, field by field, in the
names each API uses for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

Api = Literal["chat", "completion", "messages", "responses"]
# The plain routes the lane takes (requestmodel.ROUTES, without the path-model ones: /engines/{model}/...,
# /openai/deployments/{model}/... stay on LiteLLM's path) -> the API, and vLLM's path for it.
ROUTES: Final[dict[str, Api]] = {
    "/v1/chat/completions": "chat", "/chat/completions": "chat",
    "/v1/completions": "completion", "/completions": "completion",
    "/v1/messages": "messages",
    "/v1/responses": "responses", "/responses": "responses", "/openai/v1/responses": "responses",
}
UPSTREAM_PATH: Final[dict[Api, str]] = {"chat": "/chat/completions", "completion": "/completions",
                                        "messages": "/messages", "responses": "/responses"}
# The deployment's completion cap, by API; a client's own cap in any of these names wins.
_CAP_FIELD: Final[dict[Api, str]] = {"chat": "max_tokens", "completion": "max_tokens", "messages": "max_tokens",
                                     "responses": "max_output_tokens"}
_CLIENT_CAPS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Anthropic's Messages API has no repetition_penalty (vLLM's /v1/messages ignores fields it does not know).
_SAMPLING: Final = ("temperature", "top_p")
_USAGE: Final = b'"usage"'
_EVENT_END: Final = b"\n\n"


def merged(api: Api, body: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with the deployment's sampling defaults (`params`: its litellm_params) where the client set none."""
    out = dict(body)
    for name in _SAMPLING:
        if params.get(name) is not None:
            out.setdefault(name, params[name])
    cap = params.get("max_tokens")
    if isinstance(cap, int) and not any(out.get(f) is not None for f in _CLIENT_CAPS):
        out[_CAP_FIELD[api]] = cap
    extra = params.get("extra_body")
    if isinstance(extra, Mapping):
        for name, value in extra.items():
            if value is not None and not (api == "messages" and name == "repetition_penalty"):
                out.setdefault(name, value)
    return out


def with_usage_requested(api: Api, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the body to send, whether the usage chunk must be stripped again): a chat or text completion stream
    asks vLLM for its final usage chunk (`stream_options.include_usage`) when the client did not."""
    if api not in ("chat", "completion") or body.get("stream") is not True:
        return body, False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    asked = {**options} if isinstance(options, dict) else {}
    return {**body, "stream_options": {**asked, "include_usage": True}}, True


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, event: object) -> None:
        """Take the usage an answer or a streamed event carries: chat and text completions (`usage`), Anthropic
        messages (`message.usage` at the start, `usage` in message_delta), Responses (`response.usage`)."""
        if not isinstance(event, dict):
            return
        found = event.get("usage")
        for holder in ("response", "message"):
            inner = event.get(holder)
            if not isinstance(found, dict) and isinstance(inner, dict):
                found = inner.get("usage")
        if not isinstance(found, dict):
            return
        prompt = found.get("prompt_tokens", found.get("input_tokens"))
        completion = found.get("completion_tokens", found.get("output_tokens"))
        if isinstance(prompt, int):
            self.prompt_tokens = max(self.prompt_tokens, prompt)
        if isinstance(completion, int):
            self.completion_tokens = max(self.completion_tokens, completion)


@dataclass
class StreamRelay:
    """Passes a server-sent-event stream through as it comes. Only a piece that holds `"usage"` (vLLM's last
    chunks) or ends mid-event is looked into; `strip`: the usage-only chunk (no choices) is dropped, for a client
    that did not ask for it."""

    strip: bool
    usage: Usage = field(default_factory=Usage)
    _pending: bytes = b""

    def feed(self, piece: bytes) -> bytes:
        if not self._pending and piece.endswith(_EVENT_END) and _USAGE not in piece:
            return piece  # the hot path: a whole event without usage, relayed as it is
        data = self._pending + piece
        cut = data.rfind(_EVENT_END)
        if cut < 0:
            self._pending = data
            return b""
        complete, self._pending = data[:cut + 2], data[cut + 2:]
        if _USAGE not in complete:
            return complete
        return b"".join(self._event(e + _EVENT_END) for e in complete[:-2].split(_EVENT_END))

    def close(self) -> bytes:
        """What is left when the stream ends (an unterminated last event)."""
        rest, self._pending = self._pending, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        if _USAGE not in event:
            return event
        payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        self.usage.add(parsed)
        if self.strip and isinstance(parsed, dict) and parsed.get("choices") == [] and parsed.get("usage"):
            return b""
        return event


# The last event of each API's stream: chat completions' `data: [DONE]`, the Responses API's
# `response.completed` / `response.incomplete` (openai-python's ResponseStreamEvent types) and the Messages API's
# `message_stop` (Anthropic's streaming docs). A client may hang up once it has one (Codex does, before the
# stream's last bytes): its answer was whole all the same. SSE fields start a line, and a model's text inside an
# event is JSON-escaped (no raw newline, quotes as \"), so none of these can come from what the model wrote.
_LINE_ENDS: Final = (b"data: [DONE]", b"event: message_stop", b"event: response.completed",
                     b"event: response.incomplete")
_TYPE_ENDS: Final = (b'"type":"response.completed"', b'"type": "response.completed"',
                     b'"type":"response.incomplete"', b'"type": "response.incomplete"')


def ends_stream(chunk: bytes) -> bool:
    """The chunk holds the stream's last event, so a client that leaves after it had its whole answer."""
    return (chunk.startswith(_LINE_ENDS) or any(b"\n" + end in chunk for end in _LINE_ENDS)
            or any(end in chunk for end in _TYPE_ENDS))


def answer_usage(body: bytes) -> Usage:
    """The usage of a whole (non-streamed) answer."""
    usage = Usage()
    try:
        usage.add(orjson.loads(body))
    except orjson.JSONDecodeError:
        pass
    return usage
