"""Response bodies and SSE streams in vLLM's shapes (chat, completions, responses).

A stream is a sequence of `(token_index, bytes)`: the engine waits until token `token_index` is due
before sending the bytes, so several events can share one token (the role chunk and the first token).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

from confgen.sim.parse import SimRequest, ToolCall

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
         "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua")
TOKENS = tuple(f" {w}" for w in WORDS)
DONE = b"data: [DONE]\n\n"
Stream = Iterator[tuple[int, bytes]]


def new_id(kind: str) -> str:
    prefix = {"chat": "chatcmpl-", "completion": "cmpl-", "responses": "resp_"}[kind]
    return prefix + os.urandom(16).hex()


def token(i: int) -> str:
    return TOKENS[i % len(TOKENS)].lstrip() if i == 0 else TOKENS[i % len(TOKENS)]


def text_of(n: int) -> str:
    return "".join(token(i) for i in range(n))


def tool_tokens(call: ToolCall) -> list[str]:
    """The arguments split into the pieces that stream as tokens (4 characters each, at least one)."""
    args = call.arguments
    return [args[i:i + 4] for i in range(0, len(args), 4)] or [""]


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None}


def sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def full_body(req: SimRequest, rid: str, created: int, n: int, finish: str) -> dict[str, Any]:
    """The non-streaming answer; for a tool call `n` is the number of argument pieces."""
    if req.kind == "responses":
        return _response_object(req, rid, created, n, status="completed", output=_response_output(req, rid, n))
    if req.kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text_of(n), "logprobs": None, "finish_reason": finish,
                                  "stop_reason": None, "prompt_logprobs": None}
        return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
                "choices": [choice], "usage": usage(req.prompt_tokens, n), "kv_transfer_params": None}
    message: dict[str, Any] = {"role": "assistant", "content": text_of(n), "refusal": None, "annotations": None,
                               "audio": None, "function_call": None, "tool_calls": [], "reasoning_content": None}
    if req.tool_call is not None:
        message["content"] = None
        message["tool_calls"] = [_tool_call_obj(req.tool_call, rid)]
        finish = "tool_calls"
    return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                         "stop_reason": None}],
            "service_tier": None, "system_fingerprint": None, "usage": usage(req.prompt_tokens, n),
            "prompt_logprobs": None, "kv_transfer_params": None}


def stream(req: SimRequest, rid: str, created: int, n: int, finish: str) -> Stream:
    if req.kind == "responses":
        return _responses_stream(req, rid, created, n)
    if req.kind == "completion":
        return _completion_stream(req, rid, created, n, finish)
    return _chat_stream(req, rid, created, n, finish)


def _chat_stream(req: SimRequest, rid: str, created: int, n: int, finish: str) -> Stream:
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model}
    extra = {"usage": None} if req.include_usage else {}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        return sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
                    **extra})

    yield 0, chunk({"role": "assistant", "content": ""})
    if req.tool_call is not None:
        call = _tool_call_obj(req.tool_call, rid)
        call["function"]["arguments"] = ""
        yield 0, chunk({"tool_calls": [{"index": 0, **call}]})
        for i, piece in enumerate(tool_tokens(req.tool_call)):
            yield i, chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield n - 1, chunk({}, "tool_calls")
    else:
        for i in range(n):
            yield i, chunk({"content": token(i)}, finish if i == n - 1 else None)
    if req.include_usage:
        yield n - 1, sse({**head, "choices": [], "usage": usage(req.prompt_tokens, n)})
    yield n - 1, DONE


def _completion_stream(req: SimRequest, rid: str, created: int, n: int, finish: str) -> Stream:
    head = {"id": rid, "object": "text_completion", "created": created, "model": req.model}
    extra = {"usage": None} if req.include_usage else {}
    for i in range(n):
        reason = finish if i == n - 1 else None
        yield i, sse({**head, "choices": [{"index": 0, "text": token(i), "logprobs": None, "finish_reason": reason,
                                           "stop_reason": None}], **extra})
    if req.include_usage:
        yield n - 1, sse({**head, "choices": [], "usage": usage(req.prompt_tokens, n)})
    yield n - 1, DONE


def _tool_call_obj(call: ToolCall, rid: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-tool-{rid[-16:]}", "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


# --- the Responses API (minimal: one message or one function call per answer) ---

def _response_usage(req: SimRequest, n: int) -> dict[str, Any]:
    return {"input_tokens": req.prompt_tokens, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": n,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": req.prompt_tokens + n}


def _response_object(req: SimRequest, rid: str, created: int, n: int, *, status: str,
                     output: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": req.model,
            "output": output, "usage": _response_usage(req, n) if status == "completed" else None,
            "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0,
            "max_output_tokens": req.max_tokens, "text": {"format": {"type": "text"}}}


def _response_output(req: SimRequest, rid: str, n: int) -> list[dict[str, Any]]:
    if req.tool_call is not None:
        return [{"type": "function_call", "id": f"fc_{rid[-16:]}", "call_id": f"call_{rid[-16:]}",
                 "name": req.tool_call.name, "arguments": req.tool_call.arguments, "status": "completed"}]
    return [{"type": "message", "id": f"msg_{rid[-16:]}", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": text_of(n), "annotations": []}]}]


def _responses_stream(req: SimRequest, rid: str, created: int, n: int) -> Stream:
    seq = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": next(seq), **fields}
        return b"event: " + kind.encode() + b"\n" + sse(doc)

    final = _response_output(req, rid, n)[0]
    yield 0, event("response.created", response=_response_object(req, rid, created, n, status="in_progress", output=[]))
    if req.tool_call is not None:
        item = {**final, "arguments": "", "status": "in_progress"}
        yield 0, event("response.output_item.added", output_index=0, item=item)
        for i, piece in enumerate(tool_tokens(req.tool_call)):
            yield i, event("response.function_call_arguments.delta", item_id=final["id"], output_index=0,
                           delta=piece)
        yield n - 1, event("response.function_call_arguments.done", item_id=final["id"], output_index=0,
                           arguments=req.tool_call.arguments)
    else:
        item = {**final, "status": "in_progress", "content": []}
        part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": final["id"], "output_index": 0, "content_index": 0}
        yield 0, event("response.output_item.added", output_index=0, item=item)
        yield 0, event("response.content_part.added", **ids, part=part)
        for i in range(n):
            yield i, event("response.output_text.delta", **ids, delta=token(i), logprobs=[])
        yield n - 1, event("response.output_text.done", **ids, text=text_of(n), logprobs=[])
        yield n - 1, event("response.content_part.done", **ids, part=final["content"][0])
    yield n - 1, event("response.output_item.done", output_index=0, item=final)
    done = _response_object(req, rid, created, n, status="completed", output=[final])
    yield n - 1, event("response.completed", response=done)
