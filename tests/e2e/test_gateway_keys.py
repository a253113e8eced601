"""API keys through the real LiteLLM gateway (our custom_auth + ledger callback, the rendered template) in
front of the simulator, with the machine's PostgreSQL (a database of its own) and Redis (a key prefix of
its own). Two gateway instances share both, like two replicas behind a load balancer."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.keys_support import (
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    Load,
    confgen,
    create_key,
    poll,
    redis_namespace,
    render_config,
    scalar,
    scratch_database,
)
from tests.simproc import SimProc, running_sim

pytestmark = pytest.mark.e2e
SIM_PORT, PORT_A, PORT_B = 18400, 14400, 14401
TTL_S = 2.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database() as database:
        yield database


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProc]:
    with running_sim(SIM_PORT, "--served-model-name", MODEL, "--ttft-ms", "1", "--itl-ms", "1", "--output-tokens",
                     "4", "--max-num-seqs", "256", env={"VLLM_API_KEY": VLLM_KEY}) as proc:
        yield proc


@pytest.fixture(scope="module")
def gateways(url: str, sim: SimProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    folder = tmp_path_factory.mktemp("gateways")
    config = render_config(folder / "generated", SIM_PORT)
    with redis_namespace() as namespace:
        pair = (Gateway(PORT_A, config, folder / "a", url, namespace, TTL_S),
                Gateway(PORT_B, config, folder / "b", url, namespace, TTL_S))
        try:
            for gateway in pair:
                gateway.spawn()
            for gateway in pair:
                gateway.wait_healthy()
            yield pair
        finally:
            for gateway in pair:
                gateway.stop()


def post(gateway: Gateway, key: str, model: str = MODEL, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


def rows_by_reason(url: str, prefix: str) -> dict[str | None, int]:
    query = "SELECT reason, count(*) FROM confgen_usage WHERE key_prefix = %s GROUP BY reason"
    return dict(_fetch(url, query, (prefix,)))  # type: ignore[arg-type]


def _fetch(url: str, query: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(query.encode(), params).fetchall())


def test_created_key_works_through_the_sdk_and_lands_in_the_ledger(url: str,
                                                                  gateways: tuple[Gateway, Gateway]) -> None:
    a, _ = gateways
    created = create_key(url, "--alias", "sdk-user", "--owner", "tests")
    key, prefix = created["key"], created["prefix"]
    client = openai.OpenAI(base_url=f"{a.url}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, max_tokens=4,
                                                           messages=[{"role": "user", "content": "Hello"}])
    reply = raw.parse()
    assert reply.usage is not None
    call_id = raw.headers["x-litellm-call-id"]
    row = poll(lambda: _fetch(url, "SELECT key_prefix, key_alias, model, deployment, prompt_tokens, "
                                   "completion_tokens, status, latency_ms, route, error_class FROM confgen_usage "
                                   "WHERE call_id = %s", (call_id,)), 15, what="the ledger row")
    assert len(row) == 1
    got_prefix, alias, model, deployment, prompt, completion, status, latency, route, error = row[0]
    assert (got_prefix, alias, model, status, route, error) == (prefix, "sdk-user", MODEL, 200,
                                                                "/v1/chat/completions", None)
    assert (prompt, completion) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert str(deployment).startswith(f"http://127.0.0.1:{SIM_PORT}/v1")
    assert isinstance(latency, float)
    assert latency > 0
    # The key itself is nowhere: not in the ledger, not in the gateway's log.
    assert scalar(url, "SELECT count(*) FROM confgen_usage u WHERE row_to_json(u)::text LIKE %s",
                  (f"%{key[16:]}%",)) == 0
    assert key not in a.log_text()
    assert hashlib.sha256(key.encode()).hexdigest() not in a.log_text()
    report = confgen("usage", "--since", "1h", "--by", "key", database_url=url).stdout
    assert f"sdk-user ({prefix})" in report


def test_rejections_answer_and_are_recorded(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    limited = create_key(url, "--alias", "only-other", "--models", "other-model")
    expiring = create_key(url, "--alias", "short-lived", "--expires", "1s")
    revoked = create_key(url, "--alias", "to-revoke")
    unknown = "sk-aaaaaaaaaaaa_" + "A" * 43

    malformed = post(a, "sk-not-a-key")
    assert malformed.status_code == 401
    assert "malformed API key" in malformed.json()["error"]["message"]
    assert post(a, unknown).status_code == 401
    forbidden = post(b, limited["key"])
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["message"] == ("API key only-other may not use model 'tiny-cpu'; it may use: "
                                                    "other-model")
    time.sleep(1.2)
    expired = post(a, expiring["key"])
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "API key short-lived is expired"
    statuses = [post(a, revoked["key"]).status_code]
    assert statuses == [200]
    confgen("keys", "revoke", "to-revoke", database_url=url)

    def revocation_seen() -> bool:
        # Until the cached entry expires the key still answers 200: each of those is a ledger row too.
        statuses.append(post(a, revoked["key"]).status_code)
        return statuses[-1] == 401

    poll(revocation_seen, TTL_S + 2, 0.1, "revocation seen by gateway A")
    assert post(b, revoked["key"]).json()["error"]["message"] == "API key to-revoke is revoked"
    other = create_key(url, "--alias", "admin-attempt")["key"]
    route = httpx.post(f"{a.url}/model/new", headers={"Authorization": f"Bearer {other}"}, json={}, timeout=10)
    assert route.status_code == 403
    assert route.json()["error"]["message"].startswith("Only the master key may call /model/new: API keys may")
    assert httpx.get(f"{a.url}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                     timeout=10).status_code == 200

    poll(lambda: rows_by_reason(url, limited["prefix"]) == {"model_not_allowed": 1}, 10, what="403 row")
    poll(lambda: rows_by_reason(url, expiring["prefix"]) == {"expired_key": 1}, 10, what="expired row")
    poll(lambda: rows_by_reason(url, "aaaaaaaaaaaa").get("invalid_key") == 1, 10, what="unknown-key row")
    answered = statuses.count(200)
    poll(lambda: rows_by_reason(url, revoked["prefix"]).get(None) == answered, 10,
         what=f"{answered} 200 rows of the revoked key")
    assert scalar(url, "SELECT status FROM confgen_usage WHERE key_prefix = %s AND reason = 'model_not_allowed'",
                  (limited["prefix"],)) == 403


def test_models_list_shows_only_what_a_key_may_use(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    a, _ = gateways

    def listed(key: str) -> list[str]:
        resp = httpx.get(f"{a.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        return [m["id"] for m in resp.json()["data"]]

    assert listed(MASTER_KEY) == [MODEL]
    assert listed(create_key(url, "--alias", "lists-all")["key"]) == [MODEL]
    assert listed(create_key(url, "--alias", "lists-mine", "--models", f"elsewhere,{MODEL}")["key"]) == [MODEL]
    # A key for models this gateway does not serve sees none (LiteLLM would list every model for an empty list).
    assert listed(create_key(url, "--alias", "lists-none", "--models", "elsewhere")["key"]) == []


def _away_from_a_minute_boundary() -> None:
    second = time.time() % 60
    if second > 45:
        time.sleep(61 - second)


def test_rpm_holds_across_two_gateway_instances(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    created = create_key(url, "--alias", "rpm-20", "--rpm", "20")
    _away_from_a_minute_boundary()
    answers = [post(a if i % 2 else b, created["key"]) for i in range(30)]
    assert [r.status_code for r in answers] == [200] * 20 + [429] * 10
    for refused in answers[20:]:
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 60
        assert refused.json()["error"]["message"] == f"API key rpm-20 is over its rpm limit; retry in {retry} s"
    poll(lambda: rows_by_reason(url, created["prefix"]) == {None: 20, "rate_limited": 10}, 10, what="ledger rows")


def test_tpm_and_token_budget(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    tpm = create_key(url, "--alias", "tpm-5", "--tpm", "5")
    budget = create_key(url, "--alias", "budget-5", "--budget-tokens", "5", "--period", "1d")
    _away_from_a_minute_boundary()
    assert post(a, tpm["key"]).status_code == 200  # tokens count once the request has ended
    refused = poll(lambda: (r := post(b, tpm["key"])).status_code == 429 and r, 5, 0.1, "tpm refusal")
    assert refused.json()["error"]["message"].startswith("API key tpm-5 is over its tpm limit")
    assert post(a, budget["key"]).status_code == 200
    over = poll(lambda: (r := post(b, budget["key"])).status_code == 429 and r, 5, 0.1, "budget refusal")
    assert over.json()["error"]["message"].startswith("API key budget-5 is over its token budget limit")
    assert 86000 < int(over.headers["retry-after"]) <= 86400
    poll(lambda: rows_by_reason(url, budget["prefix"]).get("budget_exceeded", 0) >= 1, 10, what="budget row")


def test_load_every_request_is_one_row(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    created = create_key(url, "--alias", "load")
    outcomes = Load([g.url for g in gateways], created["key"], total=2000, concurrency=32).start().wait()
    assert Counter(o.status for o in outcomes) == {200: 2000}
    poll(lambda: scalar(url, "SELECT count(*) FROM confgen_usage WHERE key_prefix = %s",
                        (created["prefix"],)) == 2000, 30, what="2000 ledger rows")
    stored = {r[0]: r[1] for r in _fetch(url, "SELECT call_id, prompt_tokens + completion_tokens FROM confgen_usage "
                                              "WHERE key_prefix = %s", (created["prefix"],))}
    assert stored == {o.call_id: o.tokens for o in outcomes}


def test_revoked_under_load_is_refused_within_the_ttl(url: str, gateways: tuple[Gateway, Gateway]) -> None:
    created = create_key(url, "--alias", "revoke-under-load")
    load = Load([g.url for g in gateways], created["key"], total=2500, concurrency=16).start()
    poll(lambda: load.progress() >= 400, 60, 0.05, "load under way")
    confgen("keys", "revoke", created["prefix"], database_url=url)
    revoked_by = time.time()
    outcomes = load.wait()
    late = [o for o in outcomes if o.started > revoked_by + TTL_S + 0.5]
    assert late, "the load ended before the TTL passed: raise total"
    assert {o.status for o in late} == {401}
    assert Counter(o.status for o in outcomes if o.started < revoked_by)[200] >= 400
    assert {o.status for o in outcomes} == {200, 401}
    sent = Counter(o.status for o in outcomes)
    poll(lambda: dict(_fetch(url, "SELECT status, count(*) FROM confgen_usage WHERE key_prefix = %s GROUP BY status",
                             (created["prefix"],))) == dict(sent), 30, what="one row per request")


def test_parallel_limit(url: str, gateways: tuple[Gateway, Gateway], sim: SimProc) -> None:
    a, b = gateways
    created = create_key(url, "--alias", "parallel-2", "--max-parallel", "2")
    sim.set_faults(hang=True)
    try:
        for gateway in (a, b):  # two requests hang in the backend: both slots taken, on different instances
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {created['key']}"},
                           json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=1.5)
        refused = post(a, created["key"])
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["message"] == "API key parallel-2 is over its max parallel limit; retry in 1 s"
    finally:
        sim.set_faults(hang=False)
