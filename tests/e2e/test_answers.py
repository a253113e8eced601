"""Every accepted request gets an answer and exactly one ledger row with the status its client saw (issue 16;
confgen/gateway/accounting.py), against a real LiteLLM gateway, simulator replicas and a Redis of the test's
own (a private redis-server, killed and restarted under load; never the machine's shared one).

- an idle client connection outlives the client's own reuse window (the lost request of issue 16);
- a client that leaves, during a stream or a plain answer: one row, 499;
- a stream the replica breaks off ends with an error event in its API's format (OpenAI, Anthropic);
- Redis lost under load: no request fails, limits count per instance meanwhile, then in Redis again.

Ports: 16850-16869.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from tests.e2e.keys_support import MASTER_KEY, VLLM_KEY, Gateway, create_key, poll, scratch_database
from tests.e2e.routing_support import Load, Replica, render, report, sim_model, write_project
from tests.redisproc import PrivateRedis

pytestmark = pytest.mark.e2e
REDIS_PORT, GATEWAY_PORT = 16850, 16854
NAMESPACE = "h16answers"


@dataclass
class Stack:
    gateway: Gateway
    redis: PrivateRedis
    database_url: str

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("answers")
    fast = ("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "16")
    a = Replica("127.0.0.1", 16851, "big", VLLM_KEY, *fast)
    b = Replica("127.0.0.2", 16852, "big", VLLM_KEY, *fast)
    slow = Replica("127.0.0.1", 16853, "slow", VLLM_KEY, "--ttft-ms", "1500", "--itl-ms", "100", "--output-tokens",
                   "30")
    broken = Replica("127.0.0.1", 16855, "broken", VLLM_KEY, *fast, "--drop-after-chunks", "3")
    private = PrivateRedis(REDIS_PORT, folder / "redis").start()
    with scratch_database(prefix="h16_") as database_url:
        deployments = {
            "routing": {"retries": 2, "stream_idle_s": 5, "allowed_fails": 1, "cooldown_s": 3,
                        "health_interval_s": 2, "health_timeout_s": 2},
            # instances: 2 puts Redis into LiteLLM's own router too (cooldowns, probe verdicts): its loss is tested.
            "gateway": {"instances": 2, "redis_namespace": NAMESPACE},
            "models": {"big": {"replicas": [{"api_base": a.api_base}, {"api_base": b.api_base}]},
                       "slow": {"replicas": [{"api_base": slow.api_base}]},
                       "broken": {"replicas": [{"api_base": broken.api_base}]}},
        }
        project = write_project(folder / "project", deployments, {
            "big": sim_model(10, 16860), "slow": sim_model(30, 16861), "broken": sim_model(10, 16862)})
        config = render(project, ["big", "slow", "broken"], folder / "generated", {})
        gateway = Gateway(GATEWAY_PORT, config, folder / "gw", database_url, NAMESPACE + ":",
                                 redis_url=private.url)
        replicas = [a, b, slow, broken]
        try:
            for replica in replicas:
                replica.start()
            gateway.start(180)
            yield Stack(gateway, private, database_url)
        finally:
            gateway.stop()
            for replica in replicas:
                replica.stop()
            private.kill()


def rows_of(database_url: str, prefix: str, expected: int, timeout: float = 20) -> list[tuple[int, str | None]]:
    """(status, error_class) of the key's rows once `expected` are in, and a moment more for an extra one."""
    def read() -> list[tuple[int, str | None]]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            cur = conn.execute("SELECT status, error_class FROM confgen_usage WHERE key_prefix = %s ORDER BY ts",
                               (prefix,))
            return [(int(r[0]), r[1]) for r in cur.fetchall()]

    end = time.monotonic() + timeout
    while len(read()) < expected and time.monotonic() < end:
        time.sleep(0.3)
    time.sleep(1.0)
    return read()


def chat(model: str, *, stream: bool) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}


def test_an_idle_connection_is_kept_past_the_clients_reuse_window(stack: Stack) -> None:
    """httpx (and the OpenAI and Anthropic SDKs on it) reuse an idle connection for up to 5 s; the gateway closed
    it at exactly 5 s (uvicorn's default), so a request sent on it at that moment was reset unanswered."""
    body = json.dumps(chat("big", stream=False))
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=15)
    try:
        sockets = []
        for _ in range(3):
            conn.request("POST", "/v1/chat/completions", body, headers)  # http.client does not retry
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            sockets.append(conn.sock)
            time.sleep(6.0)  # longer than uvicorn's default keep-alive, shorter than the gateway's
        assert sockets[0] is sockets[1] is sockets[2], "one connection throughout"
    finally:
        conn.close()


def test_a_client_that_leaves_a_stream_is_one_row_499(stack: Stack) -> None:
    key = create_key(stack.database_url, "--alias", "leaves-stream")
    headers = {"Authorization": f"Bearer {key['key']}"}
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{stack.url}/v1/chat/completions", json=chat("slow", stream=True), headers=headers) as resp:
        assert resp.status_code == 200
        assert next(line for line in resp.iter_lines() if line.startswith("data: "))
        # leaving the block closes the connection mid-stream
    assert rows_of(stack.database_url, key["prefix"], 1, timeout=20) == [(499, "ClientDisconnected")]


def test_a_client_that_leaves_a_plain_request_is_one_row_499(stack: Stack) -> None:
    key = create_key(stack.database_url, "--alias", "leaves-plain")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.url}/v1/chat/completions", json=chat("slow", stream=False), timeout=0.8,
                   headers={"Authorization": f"Bearer {key['key']}"})
    assert rows_of(stack.database_url, key["prefix"], 1, timeout=20) == [(499, "ClientDisconnected")]


@pytest.mark.parametrize(("path", "body", "frame"), [
    ("/v1/chat/completions", chat("broken", stream=True), 'data: {"error"'),
    ("/v1/messages", {"model": "broken", "max_tokens": 16, "stream": True,
                      "messages": [{"role": "user", "content": "hello"}]}, "event: error"),
], ids=["openai", "anthropic"])
def test_a_stream_the_replica_breaks_off_ends_with_an_error_event(stack: Stack, path: str, body: dict[str, object],
                                                                  frame: str) -> None:
    key = create_key(stack.database_url, "--alias", f"broken-{path.rsplit('/', 1)[-1]}")
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{stack.url}{path}", json=body, headers={"Authorization": f"Bearer {key['key']}"}) as resp:
        assert resp.status_code == 200
        text = resp.read().decode()  # ends cleanly: no RemoteProtocolError from a dropped connection
    assert frame in text, text[-500:]
    rows = rows_of(stack.database_url, key["prefix"], 1)
    assert len(rows) == 1
    assert rows[0][0] >= 500, rows


def test_redis_lost_under_load_no_request_fails_and_counting_returns_to_redis(stack: Stack) -> None:
    key = create_key(stack.database_url, "--alias", "redis-loss", "--rpm", "100000", "--tpm", "100000000",
                     "--max-parallel", "16")
    prefix = key["prefix"]
    assert stack.redis.keys(f"*{prefix}*") == []
    load = Load([stack.url], key["key"], "big", 160, concurrency=4, stream_every=2).start()
    poll(lambda: load.progress() >= 30, 60, 0.02, "30 requests before Redis goes")
    stack.redis.kill()
    lost_at = load.progress()
    poll(lambda: load.progress() >= lost_at + 50, 120, 0.05, "50 requests without Redis")
    stack.redis.start()
    back_at = load.progress()
    results = load.wait()
    rows = rows_of(stack.database_url, prefix, len(results))
    report("Redis lost under load", results, [(None, status) for status, _ in rows], redis_lost_after=lost_at,
           redis_back_after=back_at)
    assert [r for r in results if not r.ok] == [], "no request fails because Redis is gone"
    assert len(rows) == len(results)
    assert {status for status, _ in rows} == {200}
    log = stack.gateway.log_text()
    assert "rate limits are counted per gateway instance until it is back" in log
    # Counting goes back to Redis: within the limiter's retry interval (5 s), a request is counted there again.
    client = httpx.Client(timeout=30)

    def counted_in_redis() -> bool:
        client.post(f"{stack.url}/v1/chat/completions", json=chat("big", stream=False),
                    headers={"Authorization": f"Bearer {key['key']}"}).raise_for_status()
        return bool(stack.redis.keys(f"*{prefix}*"))

    poll(counted_in_redis, 30, 0.5, "the key's counters back in Redis")
    client.close()
    assert "Redis is back: rate limits are shared again" in stack.gateway.log_text()
