"""The relay lane's pure parts: sampling defaults, the usage request and strip, the lane plan, its setting."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from confgen.errors import ConfgenError
from confgen.gateway.config import GatewayConfig
from confgen.gateway.lane import Plan
from confgen.gateway.lanebody import StreamRelay, answer_usage, merged, with_usage_requested

PARAMS = {"model": "hosted_vllm/m", "api_base": "http://h/v1", "temperature": 0.7, "top_p": 0.9, "max_tokens": 64,
          "extra_body": {"top_k": 50, "repetition_penalty": 1.1}, "timeout": 120}


@pytest.mark.parametrize(("api", "body", "expected"), [
    ("chat", {}, {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "top_k": 50, "repetition_penalty": 1.1}),
    ("chat", {"temperature": 0.2, "max_completion_tokens": 5, "top_k": 3},
     {"temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 5, "top_k": 3, "repetition_penalty": 1.1}),
    ("chat", {"temperature": None, "max_tokens": None},
     {"temperature": None, "top_p": 0.9, "max_tokens": 64, "top_k": 50, "repetition_penalty": 1.1}),
    ("completion", {"max_tokens": 8},
     {"temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "top_k": 50, "repetition_penalty": 1.1}),
    ("responses", {}, {"temperature": 0.7, "top_p": 0.9, "max_output_tokens": 64, "top_k": 50,
                       "repetition_penalty": 1.1}),
    ("messages", {"max_tokens": 8}, {"temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "top_k": 50}),
])
def test_sampling_defaults_fill_what_the_client_left_out(api: Any, body: dict[str, Any],
                                                         expected: dict[str, Any]) -> None:
    assert merged(api, body, PARAMS) == expected


def test_no_defaults_no_change() -> None:
    assert merged("chat", {"model": "m"}, {"model": "hosted_vllm/m"}) == {"model": "m"}


@pytest.mark.parametrize(("api", "body", "sent", "strip"), [
    ("chat", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}, True),
    ("chat", {"stream": True, "stream_options": {"include_usage": False, "continuous_usage_stats": False}},
     {"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": False}}, True),
    ("chat", {"stream": True, "stream_options": {"include_usage": True}},
     {"stream": True, "stream_options": {"include_usage": True}}, False),
    ("completion", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}, True),
    ("chat", {}, {}, False),
    ("messages", {"stream": True}, {"stream": True}, False),
    ("responses", {"stream": True}, {"stream": True}, False),
])
def test_streams_ask_vllm_for_usage(api: Any, body: dict[str, Any], sent: dict[str, Any], strip: bool) -> None:
    assert with_usage_requested(api, body) == (sent, strip)


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


CHUNK = _event({"choices": [{"index": 0, "delta": {"content": "say \"usage\": 1"}}]})
USAGE = _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("strip", [True, False])
def test_stream_relay_passes_chunks_and_reads_the_usage_chunk(strip: bool) -> None:
    relay = StreamRelay(strip)
    out = b"".join(relay.feed(p) for p in (CHUNK, CHUNK, USAGE, DONE)) + relay.close()
    assert out == CHUNK + CHUNK + (b"" if strip else USAGE) + DONE
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (7, 3)


def test_stream_relay_joins_events_split_across_reads() -> None:
    relay = StreamRelay(True)
    whole = CHUNK + USAGE + DONE
    out = b"".join(relay.feed(whole[i:i + 7]) for i in range(0, len(whole), 7)) + relay.close()
    assert out == CHUNK + DONE
    assert relay.usage.completion_tokens == 3


def test_stream_relay_keeps_a_chunk_with_choices_and_usage() -> None:
    both = _event({"choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": 2, "completion_tokens": 1}})
    relay = StreamRelay(True)
    assert relay.feed(both) == both
    assert relay.usage.prompt_tokens == 2


@pytest.mark.parametrize(("events", "expected"), [
    # Anthropic messages: input tokens at the start, output tokens in message_delta.
    ([{"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
      {"type": "message_delta", "usage": {"output_tokens": 5}}], (9, 5)),
    # Responses: the usage of response.completed (response.created carries none).
    ([{"type": "response.created", "response": {"usage": None}},
      {"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 6}}}], (4, 6)),
])
def test_stream_usage_of_messages_and_responses(events: list[dict[str, Any]], expected: tuple[int, int]) -> None:
    relay = StreamRelay(False)
    for event in events:
        relay.feed(_event(event))
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == expected


def test_usage_of_a_whole_answer() -> None:
    usage = answer_usage(orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}))
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 4)
    assert answer_usage(b"not json").completion_tokens == 0


def _deployment(group: str, model: str, **extra: Any) -> dict[str, Any]:
    info = extra.pop("model_info", {})
    return {"model_name": group, "litellm_params": {"model": model, **extra}, "model_info": info}


def test_plan_serves_vllm_groups_natively() -> None:
    plan = Plan.of([
        _deployment("a", "hosted_vllm/a"), _deployment("a", "hosted_vllm/a"),
        _deployment("b", "hosted_vllm/b", use_chat_completions_api=True,
                    model_info={"supported_endpoints": ["/v1/messages"]}),
        _deployment("c", "openai/gpt"),
    ], "simple-shuffle")
    assert {api for g, api in plan.served if g == "a"} == {"chat", "completion", "responses"}
    assert {api for g, api in plan.served if g == "b"} == {"chat", "completion", "messages"}
    assert not any(g == "c" for g, _ in plan.served)
    assert "hosted_vllm" in plan.why_not["c"]
    shown = plan.describe(True)["models"]
    assert shown["a"] == {"chat": "relay", "completion": "relay", "messages": "litellm", "responses": "relay"}
    assert set(plan.describe(False)["models"]["a"].values()) == {"litellm"}


def test_plan_leaves_learning_strategies_to_litellm() -> None:
    plan = Plan.of([_deployment("a", "hosted_vllm/a")], "least-busy")
    assert plan.served == frozenset()
    assert "least-busy" in plan.why_not["a"]


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("on", True), ("OFF", False), ("off", False)])
def test_lane_setting(raw: str, expected: bool) -> None:
    assert GatewayConfig.from_env({"CONFGEN_RELAY_LANE": raw}).relay_lane is expected


def test_lane_setting_refuses_other_values() -> None:
    with pytest.raises(ConfgenError) as caught:
        GatewayConfig.from_env({"CONFGEN_RELAY_LANE": "maybe"})
    assert "CONFGEN_RELAY_LANE: expected on or off, got 'maybe'" in str(caught.value)
