"""A key's model list and limits hold on every route that reaches a model, through the real LiteLLM
gateway (our custom_auth and ledger callback, the rendered config) in front of two simulators serving two
models, with the machine's PostgreSQL (a database of its own) and Redis (a key prefix of its own).

LiteLLM serves `/openai/deployments/<m>/...` and `/engines/<m>/...` with `<m>` whatever the body names
(confgen/gateway/requestmodel.py): these tests send what a hostile key holder would.

Ports: gateway 14500, simulators 18500-18501.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from confgen.gateway.requestmodel import Addressed
from tests.e2e.keys_support import (
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    poll,
    redis_namespace,
    render_config,
    scalar,
    scratch_database,
)
from tests.simproc import running_sim

pytestmark = pytest.mark.e2e
PORT, SIM_A, SIM_B = 14500, 18500, 18501
OTHER = "other-model"
CHAT = {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database() as database:
        yield database


@pytest.fixture(scope="module")
def gateway(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("routes")
    config = render_config(folder / "generated", SIM_A, also={OTHER: SIM_B})
    flags = ("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", "--max-num-seqs", "256")
    env = {"VLLM_API_KEY": VLLM_KEY}
    with (running_sim(SIM_A, "--served-model-name", MODEL, *flags, env=env),
          running_sim(SIM_B, "--served-model-name", OTHER, *flags, env=env), redis_namespace() as namespace):
        gw = Gateway(PORT, config, folder / "gw", url, namespace, 1.0)
        try:
            yield gw.start()
        finally:
            gw.stop()


def call(gw: Gateway, key: str, path: str, body: dict[str, Any] | None = None,
         method: str = "POST") -> httpx.Response:
    return httpx.request(method, f"{gw.url}{path}", headers={"Authorization": f"Bearer {key}"}, json=body,
                         timeout=30)


def served_by(url: str, call_id: str) -> str | None:
    """The deployment (api_base) the ledger row of a call names: which simulator answered."""
    found = poll(lambda: scalar(url, "SELECT deployment FROM confgen_usage WHERE call_id = %s", (call_id,)), 15,
                 what=f"ledger row of {call_id}")
    return str(found)


# Every way to name a model a key may not use, with the model it may use in the body when there is one.
FORBIDDEN = [
    ("/v1/chat/completions", {"model": OTHER, **CHAT}),
    ("/chat/completions", {"model": OTHER, **CHAT}),
    (f"/openai/deployments/{OTHER}/chat/completions", {"model": MODEL, **CHAT}),  # path wins in LiteLLM
    (f"/openai/deployments/{OTHER}/chat/completions", CHAT),  # no body model: the path alone
    (f"/engines/{OTHER}/chat/completions", {"model": MODEL, **CHAT}),
    (f"/engines/{OTHER}/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4}),
    (f"/openai/deployments/{OTHER}/completions", {"prompt": "hi", "max_tokens": 4}),
    (f"/openai/deployments/{OTHER}/embeddings", {"model": MODEL, "input": "hi"}),
    ("/v1/completions", {"model": OTHER, "prompt": "hi", "max_tokens": 4}),
    ("/v1/messages", {"model": OTHER, **CHAT}),
    ("/v1/messages/count_tokens", {"model": OTHER, "messages": CHAT["messages"]}),
    ("/v1/responses", {"model": OTHER, "input": "hi", "max_output_tokens": 4}),
    ("/openai/v1/responses", {"model": OTHER, "input": "hi", "max_output_tokens": 4}),
]


def test_a_key_reaches_no_other_model_by_any_route(url: str, gateway: Gateway) -> None:
    key = create_key(url, "--alias", "only-tiny", "--models", MODEL)["key"]
    before = httpx.get(f"http://127.0.0.1:{SIM_B}/sim/stats", timeout=5).json()["requests"]
    for path, body in FORBIDDEN:
        answer = call(gateway, key, path, body)
        assert answer.status_code == 403, f"{path} {body}: {answer.status_code} {answer.text[:300]}"
        assert f"may not use model '{OTHER}'" in answer.json()["error"]["message"], path
    assert call(gateway, key, f"/v1/models/{OTHER}", method="GET").status_code == 403
    listed = call(gateway, key, "/v1/models", method="GET").json()
    assert [m["id"] for m in listed["data"]] == [MODEL]
    after = httpx.get(f"http://127.0.0.1:{SIM_B}/sim/stats", timeout=5).json()["requests"]
    assert after == before  # nothing reached the other model's server


def test_the_path_model_is_checked_and_served_when_the_body_names_none(url: str, gateway: Gateway) -> None:
    key = create_key(url, "--alias", "path-user", "--models", MODEL)["key"]
    answer = call(gateway, key, f"/openai/deployments/{MODEL}/chat/completions", CHAT)
    assert answer.status_code == 200, answer.text
    assert served_by(url, answer.headers["x-litellm-call-id"]).startswith(f"http://127.0.0.1:{SIM_A}")
    # The master key keeps every route, and LiteLLM's path-first rule: the other model answers.
    master = call(gateway, MASTER_KEY, f"/openai/deployments/{OTHER}/chat/completions", {"model": MODEL, **CHAT})
    assert master.status_code == 200, master.text
    assert served_by(url, master.headers["x-litellm-call-id"]).startswith(f"http://127.0.0.1:{SIM_B}")


SHAPES = [
    ("/v1/chat/completions", CHAT, 400, "needs a model"),
    ("/v1/chat/completions", {"model": [MODEL, OTHER], **CHAT}, 400, "must be one model name"),
    ("/v1/chat/completions", {"model": f"{MODEL},{OTHER}", **CHAT}, 400, "must be one model name"),
    (f"/openai/deployments/{MODEL},{OTHER}/chat/completions", CHAT, 400, "must be one model name"),
    ("/openai/deployments/%20x%00/chat/completions", CHAT, 400, "is not a model name"),
    ("/v1/files", {"model": MODEL}, 403, "Only the master key may call /v1/files"),
    ("/vllm/v1/chat/completions", {"model": MODEL, **CHAT}, 403, "Only the master key may call"),
    (f"/v1beta/models/{MODEL}:generateContent", {"contents": []}, 403, "Only the master key may call"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]} {s[2]}")
def test_requests_that_address_no_single_model_are_refused(shape_key: str, gateway: Gateway,
                                                           shape: tuple[str, dict[str, Any], int, str]) -> None:
    path, body, status, reason = shape
    answer = call(gateway, shape_key, path, body)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["error"]["message"]


@pytest.fixture(scope="module")
def shape_key(url: str) -> str:
    key: str = create_key(url, "--alias", "shapes", "--models", MODEL)["key"]
    return key


def test_rpm_holds_on_path_routes_without_a_body_model(url: str, gateway: Gateway) -> None:
    key = create_key(url, "--alias", "rpm-3", "--rpm", "3")["key"]
    _wait_for_a_fresh_minute(10)
    paths = [f"/openai/deployments/{MODEL}/chat/completions", f"/engines/{MODEL}/chat/completions"]
    codes = [call(gateway, key, paths[i % 2], CHAT).status_code for i in range(6)]
    assert sorted(codes) == [200, 200, 200, 429, 429, 429], codes


def _wait_for_a_fresh_minute(needed_s: float) -> None:
    """Sleep until at least `needed_s` seconds are left in the current minute (the limits' windows)."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


def test_a_burst_spends_at_most_the_tpm_and_one_reservation(url: str, gateway: Gateway) -> None:
    tpm = 120
    created = create_key(url, "--alias", "tpm-burst", "--tpm", str(tpm))
    _wait_for_a_fresh_minute(20)
    body = {"model": MODEL, "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {created['key']}"}) as client:
            return await asyncio.gather(*(client.post(f"{gateway.url}/v1/chat/completions", json=body)
                                          for _ in range(12)))

    answers = asyncio.run(burst())
    ok = [a for a in answers if a.status_code == 200]
    spent = sum(a.json()["usage"]["total_tokens"] for a in ok)
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(refused) == 12
    assert ok
    assert refused
    reservation = Addressed("/v1/chat/completions", "inference", MODEL, body).reservation(None)
    assert spent <= tpm + reservation, f"{len(ok)} answered, {spent} tokens spent under tpm {tpm}"
    assert "may use up to" in refused[0].json()["error"]["message"]
    print(f"burst of 12 under tpm {tpm}: {len(ok)} answered, {spent} tokens spent, {len(refused)} refused")
