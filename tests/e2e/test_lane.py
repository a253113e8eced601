"""The relay lane (confgen/gateway/lane.py) and LiteLLM's own path, side by side: the same behaviour suite
against two real LiteLLM gateways on one rendered config, one with RELAY_LANE=on (the default) and one with
off. Behind them: a real CPU vLLM for tiny-cpu (SDK checks, sampling defaults read from vLLM's request log),
and simulator replicas (confgen/sim, named as such) of a model group "big" on two loopback "hosts" with a
fallback "small", for the retry, kill and fallback cases. Real PostgreSQL (a database `h19_*`) and Redis
(a key prefix of its own).

Ports: gateways 16430-16431, simulators 16420-16422 (and 16490-16491 in the model files, never bound),
vLLM 17400.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest
import redis

from confgen.load import Project
from confgen.runtime import secret_files
from tests.e2e.keys_support import MASTER_KEY, Gateway, create_key, poll, scratch_database
from tests.e2e.routing_support import (
    TINY_CPU_MODEL,
    Load,
    Replica,
    Result,
    new_key,
    render,
    report,
    sim_model,
    status_mismatches,
    wait_ledger,
    write_project,
)
from tests.e2e.test_routing import _ensure_tiny_weights, _start_vllm, _wait_vllm
from tests.procgroup import stop_group

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LANES = ("on", "off")
GATEWAY_PORTS = {"on": 16430, "off": 16431}
VLLM_PORT = 17400
MODEL = "tiny-cpu"
SIM_FLAGS = ("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "16")
REQUEST_TIMEOUT_S, STREAM_IDLE_S, COOLDOWN_S, HEALTH_INTERVAL_S = 3, 2, 3, 2
ROW_FIELDS = ("status", "key_prefix", "key_alias", "model", "deployment", "route", "prompt_tokens",
              "completion_tokens", "stream", "error_class", "reason")


@dataclass
class LaneGateway(Gateway):
    vllm_key: str = ""
    lane: str = "on"

    def env(self) -> dict[str, str]:
        return {**super().env(), "VLLM_API_KEY": self.vllm_key, "CONFGEN_RELAY_LANE": self.lane}


@dataclass
class Stacks:
    gateways: dict[str, LaneGateway]
    a: Replica
    b: Replica
    small: Replica
    database_url: str
    vllm: subprocess.Popen[bytes]
    vllm_log: Path

    def settle(self) -> None:
        for replica in (self.a, self.b, self.small):
            if replica.sim is None:
                replica.start()
            replica.faults(hang=False, error_rate=0.0)



@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    secret_files.ensure_generated(Project(ROOT))  # vLLM reads the repo's secrets/VLLM_API_KEY, as runMe.sh does
    _ensure_tiny_weights()
    vllm_key = secret_files.require(Project(ROOT), ("VLLM_API_KEY",))["VLLM_API_KEY"]
    scratch = Path(tempfile.mkdtemp(prefix="h19-vllm-"))  # vLLM's sockets: a short path
    vllm = _start_vllm(VLLM_PORT, scratch)
    folder = tmp_path_factory.mktemp("lane")
    a = Replica("127.0.0.1", 16420, "big", vllm_key, *SIM_FLAGS)
    b = Replica("127.0.0.2", 16421, "big", vllm_key, *SIM_FLAGS)
    small = Replica("127.0.0.1", 16422, "small", vllm_key, *SIM_FLAGS)
    namespace = f"h19_{secrets.token_hex(4)}:"
    try:
        with scratch_database(prefix="h19_") as database_url:
            deployments = {
                "routing": {"retries": 2, "stream_idle_s": STREAM_IDLE_S, "allowed_fails": 1,
                            "cooldown_s": COOLDOWN_S, "health_interval_s": HEALTH_INTERVAL_S, "health_timeout_s": 2},
                "models": {
                    "big": {"replicas": [{"api_base": a.api_base}, {"api_base": b.api_base, "weight": 3}],
                            "fallbacks": ["small"]},
                    "small": {"replicas": [{"api_base": small.api_base}]},
                    MODEL: {"replicas": [{"api_base": f"http://127.0.0.1:{VLLM_PORT}/v1"}]},
                },
            }
            project = write_project(folder / "project", deployments, {
                "big": sim_model(REQUEST_TIMEOUT_S, 16490), "small": sim_model(REQUEST_TIMEOUT_S, 16491),
                MODEL: TINY_CPU_MODEL})
            config = render(project, ["big", "small", MODEL], folder / "generated", {})
            gateways = {lane: LaneGateway(port, config, folder / f"gw-{lane}", database_url, namespace,
                                          vllm_key=vllm_key, lane=lane) for lane, port in GATEWAY_PORTS.items()}
            try:
                for replica in (a, b, small):
                    replica.start()
                for gateway in gateways.values():
                    gateway.spawn()
                for gateway in gateways.values():
                    gateway.wait_healthy(240)
                _wait_vllm(vllm, VLLM_PORT, scratch / "vllm.log")
                yield Stacks(gateways, a, b, small, database_url, vllm, scratch / "vllm.log")
            finally:
                for gateway in gateways.values():
                    gateway.stop()
                for replica in (a, b, small):
                    replica.stop()
    finally:
        stop_group(vllm)
        shutil.rmtree(scratch, ignore_errors=True)
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for name in client.scan_iter(f"{namespace}*", count=1000):
            client.delete(name)
        client.close()


@pytest.fixture(params=LANES, ids=[f"lane-{lane}" for lane in LANES])
def lane(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gw(stacks: Stacks, lane: str) -> LaneGateway:
    stacks.settle()
    return stacks.gateways[lane]


def _oa(gw: Gateway, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=60)


def _rows(database_url: str, call_id: str, timeout: float = 10, *, count: int = 1) -> dict[str, Any]:
    """The ledger row of one request, by LiteLLM's call id (the x-litellm-call-id header); or, for a request
    refused before LiteLLM made one (`call_id` is then the key's prefix), the key's `count`-th row."""
    columns = ", ".join(ROW_FIELDS)
    where = "call_id = %s" if count == 1 else "key_prefix = %s"

    def row() -> tuple[Any, ...] | None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            found = conn.execute(f"SELECT {columns} FROM confgen_usage WHERE {where} ORDER BY ts",  # noqa: S608
                                 (call_id,)).fetchall()
        assert len(found) <= count, f"one row per request, got {found}"
        return found[-1] if len(found) == count else None

    return dict(zip(ROW_FIELDS, poll(row, timeout, 0.2, f"the ledger row of {call_id}"), strict=True))


def test_health_says_which_lane_serves_what(gw: LaneGateway, lane: str) -> None:
    body = httpx.get(f"{gw.url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60).json()
    lanes = body["confgen_lanes"]
    assert lanes["enabled"] is (lane == "on")
    relay = "relay" if lane == "on" else "litellm"
    assert lanes["models"][MODEL] == {"chat": relay, "completion": relay, "messages": "litellm", "responses": relay}
    assert "messages_api: translate" in lanes["notes"][MODEL]
    assert body["healthy_endpoints"], "LiteLLM's own answer is still there"
    assert httpx.get(f"{gw.url}/health", timeout=30).status_code == 401


def test_sdk_chat_and_its_ledger_row(gw: LaneGateway, stacks: Stacks) -> None:
    created = create_key(stacks.database_url, "--alias", f"sdk-{gw.lane}", "--models", MODEL, "--rpm", "1000")
    raw = _oa(gw, created["key"]).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    reply = raw.parse()
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None
    assert reply.usage.completion_tokens >= 1
    row = _rows(stacks.database_url, raw.headers["x-litellm-call-id"])
    assert row == {"status": 200, "key_prefix": created["prefix"], "key_alias": f"sdk-{gw.lane}", "model": MODEL,
                   "deployment": row["deployment"], "route": "/v1/chat/completions",
                   "prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens,
                   "stream": False, "error_class": None, "reason": None}
    assert str(row["deployment"]).startswith(f"http://127.0.0.1:{VLLM_PORT}/v1")
    assert raw.headers["x-litellm-model-group"] == MODEL
    assert raw.headers.get("x-confgen-lane") == ("relay" if gw.lane == "on" else None)


@pytest.mark.parametrize("asked", [True, False], ids=["usage-asked", "usage-not-asked"])
def test_streaming_usage_only_when_asked_and_always_in_the_ledger(gw: LaneGateway, stacks: Stacks,
                                                                   asked: bool) -> None:
    options = {"stream_options": {"include_usage": True}} if asked else {}
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True, **options)
    assert raw.headers.get("x-confgen-lane") == ("relay" if gw.lane == "on" else None)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    assert text
    if asked:
        assert usage
        assert usage[-1].completion_tokens >= 1
    else:
        assert not usage, "the usage chunk the gateway asked for is not the client's"
    row = _rows(stacks.database_url, raw.headers["x-litellm-call-id"])
    assert row["stream"] is True
    assert row["completion_tokens"] >= 1
    assert row["prompt_tokens"] >= 1
    if asked:
        assert (row["prompt_tokens"], row["completion_tokens"]) == (usage[-1].prompt_tokens,
                                                                     usage[-1].completion_tokens)


def test_completions_responses_and_messages(gw: LaneGateway) -> None:
    assert _oa(gw).completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8).choices[0].text
    answer = _oa(gw).responses.create(model=MODEL, input="Hello", max_output_tokens=16)
    assert answer.output
    streamed = [e.type for e in _oa(gw).responses.create(model=MODEL, input="Hi", max_output_tokens=16, stream=True)]
    assert "response.completed" in streamed
    client = anthropic.Anthropic(base_url=gw.url, auth_token=MASTER_KEY, api_key=None, max_retries=0)
    reply = client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
    assert reply.usage.output_tokens >= 1


def _vllm_params_after(stacks: Stacks, mark: int) -> str:
    """vLLM's log line of the last request after `mark`; the Router's one-token health probes (max_tokens=1,
    every HEALTH_INTERVAL_S) are not ours."""
    lines = [line for line in stacks.vllm_log.read_text(errors="replace")[mark:].splitlines()
             if "Received request" in line and "max_tokens=1," not in line]
    assert lines, "vLLM logged no request (--enable-log-requests in models/tiny-cpu.yml)"
    return lines[-1]


def test_sampling_defaults_reach_vllm_and_client_values_win(gw: LaneGateway, stacks: Stacks) -> None:
    mark = len(stacks.vllm_log.read_text(errors="replace"))
    _oa(gw).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    params = _vllm_params_after(stacks, mark)
    for expected in ("temperature=0.7", "top_p=0.9", "top_k=50", "repetition_penalty=1.1", "max_tokens=64"):
        assert expected in params, params
    mark = len(stacks.vllm_log.read_text(errors="replace"))
    _oa(gw).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=0.2,
                                    max_tokens=5, stream=True).close()
    params = poll(lambda: "max_tokens=5," in stacks.vllm_log.read_text(errors="replace")[mark:]
                  and _vllm_params_after(stacks, mark), 10, 0.2, "vLLM's log line")
    assert "temperature=0.2" in params, params
    assert "max_tokens=5" in params, params
    assert "top_k=50" in params, params


def test_refusals_answer_and_are_recorded_once(gw: LaneGateway, stacks: Stacks) -> None:
    created = create_key(stacks.database_url, "--alias", f"refused-{gw.lane}", "--models", "small", "--rpm", "1")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}

    def post(key: str | None, payload: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{gw.url}/v1/chat/completions", json=payload, headers=headers, timeout=60)

    assert post(None, body).status_code == 401
    assert post("sk-wrong-key-0123456789", body).status_code == 401
    refused = post(created["key"], body)
    assert refused.status_code == 403
    assert "may not use model 'tiny-cpu'" in refused.json()["error"]["message"]
    time.sleep(max(0.0, 56 - time.time() % 60) if time.time() % 60 > 55 else 0)  # stay inside one rpm minute
    assert post(created["key"], {**body, "model": "small"}).status_code == 200
    limited = post(created["key"], {**body, "model": "small"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"]
    rows = wait_ledger(stacks.database_url, created["prefix"], 3)
    assert sorted(status for _, status in rows) == [200, 403, 429]


def test_ledger_rows_are_the_same_on_both_lanes(stacks: Stacks) -> None:
    """Answered, refused by auth, and failed upstream (a lone replica, never benched, that answers 500)."""
    stacks.settle()
    created = create_key(stacks.database_url, "--alias", "parity", "--models", "big,small")
    cases = {"plain": ({"model": "big"}, 200), "stream": ({"model": "big", "stream": True}, 200),
             "refused": ({"model": MODEL}, 403), "failed": ({"model": "small"}, 500),
             "failed stream": ({"model": "small", "stream": True}, 500)}
    rows, seen = {}, 0
    for case, (fields, status) in cases.items():
        stacks.small.faults(error_rate=1.0 if status == 500 else 0.0)
        for lane, gateway in stacks.gateways.items():
            resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60,
                              headers={"Authorization": f"Bearer {created['key']}"},
                              json={**fields, "messages": [{"role": "user", "content": "x"}]})
            assert resp.status_code == status, (lane, case, resp.text)
            seen += 1
            call_id = resp.headers.get("x-litellm-call-id")
            row = _rows(stacks.database_url, call_id or created["prefix"], count=1 if call_id else seen)
            url = str(row["deployment"])
            row["deployment"] = next((f"<replica>{url.removeprefix(r.api_base)}" for r in (stacks.a, stacks.b,
                                      stacks.small) if url.startswith(r.api_base)), url)
            rows[lane, case] = row
    stacks.settle()
    for case in cases:
        assert rows["on", case] == rows["off", case], case


def _ledger_check(name: str, stacks: Stacks, prefix: str, results: list[Result]) -> None:
    rows = wait_ledger(stacks.database_url, prefix, len(results))
    report(name, results, rows)
    assert len(rows) == len(results), "every request is one ledger row"
    assert status_mismatches(results, rows) == []


def test_replica_answering_500s_is_hidden_by_retries(gw: LaneGateway, stacks: Stacks) -> None:
    key, prefix = new_key(stacks.database_url, f"errors-{gw.lane}")
    stacks.b.faults(error_rate=0.3)
    before = stacks.b.stats()["by_status"].get("500", 0)
    try:
        results = Load([gw.url], key, "big", 60, stream_every=3).run()
        errors = stacks.b.stats()["by_status"].get("500", 0) - before
    finally:
        stacks.b.faults(error_rate=0.0)
    _ledger_check(f"30% 500s on one replica, lane {gw.lane}", stacks, prefix, results)
    assert errors >= 1, "the faulty replica answered 500 at least once"
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert any(r.retries > 0 for r in results), "x-litellm-attempted-retries says a retry answered"


def test_kill_one_replica_traffic_moves(gw: LaneGateway, stacks: Stacks) -> None:
    key, prefix = new_key(stacks.database_url, f"kill-{gw.lane}")
    load = Load([gw.url], key, "big", 80, stream_every=2).start()
    poll(lambda: load.progress() >= 20, 60, 0.02, "20 requests before the kill")
    killed_at = time.monotonic()
    stacks.b.kill()
    results = load.wait()
    in_flight = [r for r in results if r.started < killed_at < r.ended]
    failed = [r for r in results if not r.ok]
    _ledger_check(f"kill one replica, lane {gw.lane}", stacks, prefix, results)
    assert all(r.stream and r in in_flight for r in failed), failed
    assert all(r.ok for r in results if r.started > killed_at), "no client error after the kill"
    assert {r.api_base for r in results if r.ok and r.started > killed_at + 0.5} == {stacks.a.api_base}


def test_all_replicas_down_the_fallback_answers(gw: LaneGateway, stacks: Stacks) -> None:
    key, prefix = new_key(stacks.database_url, f"fallback-{gw.lane}")
    stacks.a.kill()
    stacks.b.kill()
    try:
        results = Load([gw.url], key, "big", 20, stream_every=2).run()
    finally:
        stacks.a.start()
        stacks.b.start()
    _ledger_check(f"all replicas down, lane {gw.lane}", stacks, prefix, results)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert {r.group for r in results} == {"small"}, "x-litellm-model-group names the model that answered"
    assert {r.model for r in results} == {"small"}, "so does the response's model field"
    assert all(r.fallbacks == 1 for r in results)


def test_hung_replica_streams_time_out_and_are_retried(gw: LaneGateway, stacks: Stacks) -> None:
    key, prefix = new_key(stacks.database_url, f"hang-{gw.lane}")
    stacks.b.faults(hang=True)
    try:
        results = Load([gw.url], key, "big", 12, concurrency=4, stream_every=1).run()
    finally:
        stacks.b.faults(hang=False)
    _ledger_check(f"hang one replica, lane {gw.lane}", stacks, prefix, results)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert {r.api_base for r in results} == {stacks.a.api_base}
    for r in results:
        assert r.ended - r.started < (r.retries + 1) * STREAM_IDLE_S + 5


def test_health_json_is_valid_for_tools(stacks: Stacks) -> None:
    """`confgen routes` reads GET /health: the added key keeps it a JSON object with LiteLLM's fields."""
    body = httpx.get(f"{stacks.gateways['on'].url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                     timeout=60)
    assert body.headers["content-type"].startswith("application/json")
    assert {"healthy_endpoints", "unhealthy_endpoints", "confgen_lanes"} <= set(json.loads(body.text))
