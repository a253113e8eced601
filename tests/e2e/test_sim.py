"""The vLLM-API simulator as a real process: latency model, queueing, faults, metrics, SDK and LiteLLM.

Ports 15100-15199 belong to these tests. Timing assertions have a tight lower bound (the simulator
never answers early) and a generous upper bound (2 shared cores are noisy).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.simproc import SimProc, port_is_free, running_sim

pytestmark = pytest.mark.e2e
KEY = "sim-test-key-" + secrets.token_hex(8)
AUTH = {"Authorization": f"Bearer {KEY}"}
# The timed simulator: TTFT 100 ms, then 9 gaps of 20 ms -> 280 ms for 10 tokens; 4 slots.
TTFT, ITL, TOKENS, SEQS = 0.100, 0.020, 10, 4
TOTAL = TTFT + (TOKENS - 1) * ITL
SLACK = 0.25
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "description": "weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def timed() -> Iterator[SimProc]:
    with running_sim(15110, "--served-model-name", "sim-a", "sim-b", "--ttft-ms", "100", "--itl-ms", "20",
                     "--output-tokens", str(TOKENS), "--max-num-seqs", str(SEQS), "--max-model-len", "1000",
                     env={"VLLM_API_KEY": KEY}) as sim:
        yield sim


@pytest.fixture(scope="module")
def fast_module() -> Iterator[SimProc]:
    with running_sim(15111, "--served-model-name", "fast", "--ttft-ms", "1", "--itl-ms", "1",
                     "--output-tokens", "5", "--max-num-seqs", "64", "--seed", "7") as sim:
        yield sim


@pytest.fixture
def fast(fast_module: SimProc) -> Iterator[SimProc]:
    """The fast simulator with no faults and zeroed counters; faults are cleared again afterwards."""
    clear = {"error_rate": 0, "error_status": 500, "hang": False, "slow_start_s": 0, "drop_after_chunks": None}
    fast_module.set_faults(**clear)
    fast_module.reset_stats()
    yield fast_module
    fast_module.set_faults(**clear)


def chat_body(model: str = "sim-a", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **extra}


def timed_stream(sim: SimProc, **extra: Any) -> tuple[float, float, list[str]]:
    """(time to first content, total time, data lines) for one streamed chat."""
    start = time.monotonic()
    first, lines = 0.0, []
    with httpx.stream("POST", f"{sim.url}/v1/chat/completions", headers=AUTH, timeout=10,
                      json=chat_body(stream=True, **extra)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                if not first and '"content":"' in line and '"content":""' not in line:
                    first = time.monotonic() - start
                lines.append(line)
    return first, time.monotonic() - start, lines


def metric(sim: SimProc, name: str) -> float:
    text = httpx.get(f"{sim.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


# --- the latency model ---

def test_stream_ttft_and_total_follow_the_model(timed: SimProc) -> None:
    ttft, total, lines = timed_stream(timed)
    assert TTFT <= ttft < TTFT + SLACK
    assert TOTAL <= total < TOTAL + SLACK
    assert lines[-1] == "data: [DONE]"
    assert len([line for line in lines if '"content":"' in line and '"content":""' not in line]) == TOKENS


def test_max_tokens_shortens_the_answer_and_the_time(timed: SimProc) -> None:
    start = time.monotonic()
    reply = httpx.post(f"{timed.url}/v1/chat/completions", headers=AUTH, json=chat_body(max_tokens=3), timeout=10)
    elapsed = time.monotonic() - start
    assert reply.status_code == 200
    body = reply.json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"
    assert TTFT + 2 * ITL <= elapsed < TTFT + 2 * ITL + SLACK


def test_queueing_beyond_max_num_seqs(timed: SimProc) -> None:
    async def one(client: httpx.AsyncClient) -> float:
        start = time.monotonic()
        reply = await client.post(f"{timed.url}/v1/chat/completions", headers=AUTH, json=chat_body())
        assert reply.status_code == 200
        return time.monotonic() - start

    async def run() -> tuple[list[float], dict[str, Any], float]:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=16)) as client:
            tasks = [asyncio.ensure_future(one(client)) for _ in range(2 * SEQS)]
            await asyncio.sleep(TTFT)
            async with httpx.AsyncClient(timeout=5) as probe:
                stats = (await probe.get(f"{timed.url}/sim/stats")).json()
                waiting = metric_text_value((await probe.get(f"{timed.url}/metrics")).text,
                                            "vllm:num_requests_waiting")
            return list(await asyncio.gather(*tasks)), stats, waiting

    durations, stats, waiting = asyncio.run(run())
    assert (stats["running"], stats["waiting"], stats["in_flight"]) == (SEQS, SEQS, 2 * SEQS)
    assert waiting == SEQS
    durations.sort()
    assert all(TOTAL <= d < TOTAL + SLACK for d in durations[:SEQS]), durations
    assert all(2 * TOTAL <= d < 2 * TOTAL + 2 * SLACK for d in durations[SEQS:]), durations


def metric_text_value(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_flags_per_prompt_token_slow_start_api_key_and_max_model_len() -> None:
    with running_sim(15112, "--api-key", KEY, "--ttft-ms", "0", "--per-prompt-token-ms", "1", "--itl-ms", "0",
                     "--output-tokens", "1", "--slow-start-s", "1.5", "--max-model-len", "150") as sim:
        assert httpx.get(f"{sim.url}/health").status_code == 503
        refused = httpx.post(f"{sim.url}/v1/chat/completions", headers=AUTH, json=chat_body(model="sim"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == 503
        deadline = time.monotonic() + 10
        while httpx.get(f"{sim.url}/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{sim.url}/health").status_code == 200
        prompt = {"model": "sim", "messages": [{"role": "user", "content": "x" * 400}]}  # 100 tokens -> 100 ms
        start = time.monotonic()
        reply = httpx.post(f"{sim.url}/v1/chat/completions", headers=AUTH, json=prompt)
        assert 0.1 <= time.monotonic() - start < 0.1 + SLACK
        assert reply.json()["usage"]["prompt_tokens"] == 100
        long = {"model": "sim", "messages": [{"role": "user", "content": "x" * 800}]}
        too_long = httpx.post(f"{sim.url}/v1/chat/completions", headers=AUTH, json=long)
        assert too_long.status_code == 400
        assert "maximum context length is 150 tokens" in too_long.json()["error"]["message"]
        assert httpx.post(f"{sim.url}/v1/chat/completions", json=prompt).status_code == 401


# --- API shape, auth and errors ---

def test_auth_models_and_errors(timed: SimProc) -> None:
    url = f"{timed.url}/v1/chat/completions"
    assert httpx.post(url, json=chat_body()).status_code == 401
    assert httpx.post(url, json=chat_body(), headers={"Authorization": "Bearer wrong"}).json() == \
        {"error": "Unauthorized"}
    assert httpx.get(f"{timed.url}/health").status_code == 200  # like vLLM: only /v1 needs the key
    models = httpx.get(f"{timed.url}/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["sim-a", "sim-b"]
    missing = httpx.post(url, headers=AUTH, json=chat_body(model="nope"))
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError",
                                        "param": "model", "code": 404}}
    bad = httpx.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=b'{"model": ')
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "BadRequestError"


def test_metrics_counters_move(timed: SimProc) -> None:
    before = {name: metric(timed, name) for name in (
        "vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_count")}
    usage = httpx.post(f"{timed.url}/v1/completions", headers=AUTH, timeout=10,
                       json={"model": "sim-b", "prompt": "a" * 40}).json()["usage"]
    after = {name: metric(timed, name) for name in before}
    assert after["vllm:request_success_total"] == before["vllm:request_success_total"] + 1
    assert after["vllm:prompt_tokens_total"] == before["vllm:prompt_tokens_total"] + usage["prompt_tokens"] == \
        before["vllm:prompt_tokens_total"] + 10
    assert after["vllm:generation_tokens_total"] == before["vllm:generation_tokens_total"] + TOKENS
    assert after["vllm:time_to_first_token_seconds_count"] == before["vllm:time_to_first_token_seconds_count"] + 1
    assert after["vllm:e2e_request_latency_seconds_count"] == \
        before["vllm:e2e_request_latency_seconds_count"] + 1
    text = httpx.get(f"{timed.url}/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert f'{name}{{model_name="sim-a"}} ' in text


# --- faults, seen by a client ---

def test_error_rate_within_binomial_tolerance(fast: SimProc) -> None:
    fast.set_faults(error_rate=0.3, error_status=503)
    statuses = []
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            statuses.append(client.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast")).status_code)
    errors = statuses.count(503)
    assert set(statuses) == {200, 503}
    assert 34 <= errors <= 86  # 200 * 0.3 = 60, sd 6.5: four sd either side
    assert fast.stats()["by_status"] == {"200": 200 - errors, "503": errors}


def test_hang_makes_the_client_time_out(fast: SimProc) -> None:
    fast.set_faults(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast"), timeout=0.5)
    assert fast.stats()["hung"] == 1
    fast.set_faults(hang=False)
    assert httpx.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast"), timeout=5).status_code == 200


def test_slow_start_at_run_time_fails_health_then_recovers(fast: SimProc) -> None:
    fast.set_faults(slow_start_s=1.0)
    start = time.monotonic()
    assert httpx.get(f"{fast.url}/health").status_code == 503
    assert httpx.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast")).status_code == 503
    while httpx.get(f"{fast.url}/health").status_code == 503 and time.monotonic() - start < 10:
        time.sleep(0.05)
    assert 0.9 <= time.monotonic() - start < 3
    assert httpx.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast")).status_code == 200


def test_drop_mid_stream_truncates_the_stream(fast: SimProc) -> None:
    fast.set_faults(drop_after_chunks=3)
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(  # noqa: PT012 - read until the drop
            "POST", f"{fast.url}/v1/chat/completions", json=chat_body("fast", stream=True), timeout=5) as response:
        assert response.status_code == 200
        lines.extend(line for line in response.iter_lines() if line)
    assert len(lines) == 3
    assert "data: [DONE]" not in lines
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{fast.url}/v1/chat/completions", json=chat_body("fast"), timeout=5)
    assert fast.stats()["dropped"] == 2


# --- real clients ---

def test_openai_sdk(timed: SimProc) -> None:
    client = openai.OpenAI(base_url=f"{timed.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    assert [m.id for m in client.models.list().data] == ["sim-a", "sim-b"]
    reply = client.chat.completions.create(model="sim-a", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "lorem ipsum dolor sit amet consectetur adipiscing elit sed do"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == TOKENS
    chunks = list(client.chat.completions.create(model="sim-b", messages=[{"role": "user", "content": "Hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == TOKENS
    completion = client.completions.create(model="sim-a", prompt="Once upon", max_tokens=2)
    assert completion.choices[0].text == "lorem ipsum"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])


def test_openai_sdk_tool_calls(timed: SimProc) -> None:
    client = openai.OpenAI(base_url=f"{timed.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    ask: Any = [{"role": "user", "content": 'call tool get_weather {"city": "Paris"}'}]
    reply = client.chat.completions.create(model="sim-a", messages=ask, tools=TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Paris"}')  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model="sim-a", messages=ask, tools=TOOLS,
                                                 stream=True))
    deltas = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"city":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    result: Any = [*ask, {"role": "assistant", "tool_calls": [call.model_dump()]},
              {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    after = client.chat.completions.create(model="sim-a", messages=result, tools=TOOLS)
    assert after.choices[0].finish_reason == "stop"  # a tool result gets a text answer, not another call


def test_openai_sdk_responses(timed: SimProc) -> None:
    client = openai.OpenAI(base_url=f"{timed.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    response = client.responses.create(model="sim-a", input="Hi", max_output_tokens=2)
    assert response.output_text == "lorem ipsum"
    events = list(client.responses.create(model="sim-a", input="Hi", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "lorem ipsum"


# --- the real LiteLLM proxy with the simulator as its hosted_vllm backend ---

def test_litellm_proxy_in_front_of_the_simulator(fast: SimProc, tmp_path: Path) -> None:
    port = 15150
    assert port_is_free(port), f"port {port} is in use; the LiteLLM test needs it"
    master = "sk-sim-" + secrets.token_hex(16)
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fast\n"
        "    litellm_params:\n"
        "      model: hosted_vllm/fast\n"
        f"      api_base: {fast.url}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n")
    litellm = Path(sys.executable).parent / "litellm"
    env = {**os.environ, "LITELLM_MASTER_KEY": master, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = (tmp_path / "litellm.log").open("wb")
    proc = subprocess.Popen([str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "litellm.log").read_text()
            assert time.monotonic() < deadline, "LiteLLM did not start in 120 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=master, max_retries=0, timeout=30)
        reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content == "lorem ipsum dolor sit amet"
        chunks = list(client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Hi"}],
                                                     stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "lorem ipsum dolor sit amet"
        ask: Any = [{"role": "user", "content": 'call tool get_weather {"city": "Oslo"}'}]
        tool = client.chat.completions.create(model="fast", messages=ask, tools=TOOLS)
        assert tool.choices[0].finish_reason == "tool_calls"
        assert tool.choices[0].message.tool_calls is not None
        assert tool.choices[0].message.tool_calls[0].function.arguments == '{"city":"Oslo"}'  # type: ignore[union-attr]
        assert fast.stats()["by_status"] == {"200": 3}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
