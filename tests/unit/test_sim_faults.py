"""Fault settings (flags and POST /sim/faults), stream shapes and /metrics text of the simulator."""

from __future__ import annotations

import json
import time

import pytest

from confgen.sim import shapes
from confgen.sim.config import FaultError, Faults
from confgen.sim.metrics import Metrics
from confgen.sim.parse import SimRequest, ToolCall


def test_faults_update_and_report() -> None:
    faults = Faults()
    faults.update({"error_rate": 0.25, "error_status": 503, "hang": True, "drop_after_chunks": 3})
    assert faults.as_dict() == {"error_rate": 0.25, "error_status": 503, "hang": True, "slow_start_s": 0.0,
                                "drop_after_chunks": 3, "wake_kills": False, "starting": False}


def test_slow_start_counts_from_the_update() -> None:
    faults = Faults()
    faults.update({"slow_start_s": 0.2})
    assert faults.starting()
    time.sleep(0.25)
    assert not faults.starting()


@pytest.mark.parametrize(("changes", "message"), [
    ({"error_rate": 1.5}, "error_rate: expected a fraction 0-1"),
    ({"error_rate": "x"}, "error_rate: expected a number >= 0"),
    ({"error_status": 200}, "error_status: expected an HTTP error status 400-599"),
    ({"hang": 1}, "hang: expected true or false"),
    ({"drop_after_chunks": -1}, "drop_after_chunks: expected null or an integer >= 0"),
    ({"slow_start_s": -1}, "slow_start_s: expected a number >= 0"),
    ({"explode": True}, "unknown fault explode; known: error_rate"),
])
def test_bad_fault_settings_change_nothing(changes: dict[str, object], message: str) -> None:
    faults = Faults()
    with pytest.raises(FaultError, match=message):
        faults.update({"hang": True, **changes})
    assert faults.hang is False


def events(req: SimRequest, n: int, finish: str = "stop") -> list[tuple[int, bytes]]:
    return list(shapes.stream(req, "chatcmpl-0123456789abcdef0123456789abcdef", 1, n, finish))


def payloads(stream: list[tuple[int, bytes]]) -> list[dict[str, object]]:
    return [json.loads(data.removeprefix(b"data: ")) for _, data in stream if data != shapes.DONE]


def test_chat_stream_shape_and_timing_tags() -> None:
    stream = events(SimRequest("chat", "m", 5, None, True, True), 3)
    assert [index for index, _ in stream] == [0, 0, 1, 2, 2, 2]
    docs = payloads(stream)
    assert [d["choices"][0]["delta"] for d in docs[:4]] == [  # type: ignore[index]
        {"role": "assistant", "content": ""}, {"content": "lorem"}, {"content": " ipsum"}, {"content": " dolor"}]
    assert docs[3]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert docs[4] == {"id": docs[0]["id"], "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [], "usage": {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3,
                                                "prompt_tokens_details": None}}
    assert stream[-1][1] == b"data: [DONE]\n\n"


def test_tool_call_stream_reassembles_the_arguments() -> None:
    call = ToolCall("ls", '{"path":"/tmp/x"}')
    stream = events(SimRequest("chat", "m", 5, None, True, False, call), len(shapes.tool_tokens(call)))
    deltas = [d["choices"][0]["delta"] for d in payloads(stream)]  # type: ignore[index]
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "ls"
    assert "".join(c["function"]["arguments"] for c in calls) == call.arguments
    assert payloads(stream)[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]


def test_responses_stream_ends_with_completed_and_usage() -> None:
    stream = events(SimRequest("responses", "m", 2, None, True, False), 2)
    kinds = [data.split(b"\n", 1)[0] for _, data in stream]
    assert kinds[0] == b"event: response.created"
    assert kinds[-1] == b"event: response.completed"
    last = json.loads(stream[-1][1].split(b"data: ", 1)[1])
    assert last["response"]["usage"]["output_tokens"] == 2
    assert last["response"]["output"][0]["content"][0]["text"] == "lorem ipsum"


def test_metrics_text_has_vllm_names_and_labels() -> None:
    metrics = Metrics("m", 4)
    metrics.running = 2
    metrics.ttft.observe(0.03)
    metrics.finished("stop", 10, 7, 0.4)
    text = metrics.render()
    for line in ['vllm:num_requests_running{model_name="m"} 2', 'vllm:num_requests_waiting{model_name="m"} 0',
                 'vllm:kv_cache_usage_perc{model_name="m"} 0.5', 'vllm:prompt_tokens_total{model_name="m"} 10',
                 'vllm:generation_tokens_total{model_name="m"} 7',
                 'vllm:request_success_total{finished_reason="stop",model_name="m"} 1',
                 'vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.02"} 0',
                 'vllm:time_to_first_token_seconds_bucket{model_name="m",le="0.04"} 1',
                 'vllm:time_to_first_token_seconds_count{model_name="m"} 1',
                 'vllm:e2e_request_latency_seconds_bucket{model_name="m",le="+Inf"} 1']:
        assert line in text.splitlines()
