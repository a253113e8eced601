"""Faults, against a PostgreSQL cluster of our own that the tests stop and start (never the machine's):
the database stopped during a load, the gateway killed with SIGTERM under load (database up, then down),
and a gateway started while the database is down. Every row arrives, exactly once."""

from __future__ import annotations

import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.keys_support import (
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    Load,
    PrivatePostgres,
    create_key,
    free_spool_rows,
    poll,
    redis_namespace,
    remove_tree,
    render_config,
    scratch_database,
)
from tests.simproc import SimProc, running_sim

pytestmark = pytest.mark.e2e
SIM_PORT, GATEWAY_PORT, PG_PORT = 18410, 14410, 15432


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's temp folder: another pytest run resets its mode to 0700, locking `postgres` out.
    cluster = PrivatePostgres(Path(tempfile.mkdtemp(prefix="confgen-pg-")) / "pg", PG_PORT)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        remove_tree(cluster.folder.parent)


@pytest.fixture(scope="module")
def url(postgres: PrivatePostgres) -> Iterator[str]:
    with scratch_database(postgres.server) as database:
        yield database
        if not postgres.running():
            postgres.start()  # so the database can be dropped


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProc]:
    with running_sim(SIM_PORT, "--served-model-name", MODEL, "--ttft-ms", "1", "--itl-ms", "1", "--output-tokens",
                     "4", "--max-num-seqs", "256", env={"VLLM_API_KEY": VLLM_KEY}) as proc:
        yield proc


@pytest.fixture(scope="module")
def gateway(url: str, sim: SimProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("faults")
    with redis_namespace() as namespace:
        gw = Gateway(GATEWAY_PORT, render_config(folder / "generated", SIM_PORT), folder / "gw", url, namespace, 2.0)
        try:
            yield gw.start()
        finally:
            gw.stop()


@pytest.fixture(scope="module")
def key(url: str, gateway: Gateway) -> dict[str, str]:
    created = create_key(url, "--alias", "faults")
    assert httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {created['key']}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "warm"}]},
                      timeout=30).status_code == 200  # now cached, and in the gateway's snapshot
    poll(lambda: rows(url, created["prefix"]) == 1, 10, what="the warm-up row")
    return created


def ledger(url: str, prefix: str) -> dict[str, int]:
    """call_id -> rows with it, for the key."""
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        return dict(conn.execute("SELECT call_id, count(*) FROM confgen_usage WHERE key_prefix = %s GROUP BY call_id",
                                 (prefix,)).fetchall())


def rows(url: str, prefix: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM confgen_usage WHERE key_prefix = %s", (prefix,)).fetchone()
        return int(row[0]) if row else 0


def test_database_stopped_during_load_every_row_arrives_once(url: str, postgres: PrivatePostgres, gateway: Gateway,
                                                             key: dict[str, str]) -> None:
    before = rows(url, key["prefix"])
    load = Load([gateway.url], key["key"], total=2500, concurrency=16).start()
    poll(lambda: load.progress() >= 500, 120, 0.05, "load under way")
    postgres.stop()
    stopped_at = load.progress()
    poll(lambda: load.progress() >= stopped_at + 800 or load.progress() == 2500, 120, 0.05, "load while down")
    assert free_spool_rows(gateway.spool) > 0, "nothing was spooled while the database was down"
    postgres.start()
    outcomes = load.wait()
    assert Counter(o.status for o in outcomes) == {200: 2500}  # cached key: serving never stopped
    poll(lambda: rows(url, key["prefix"]) == before + 2500, 60, 0.5, "every row in the database")
    counts = ledger(url, key["prefix"])
    assert {o.call_id for o in outcomes} <= set(counts)
    assert set(counts.values()) == {1}
    poll(lambda: free_spool_rows(gateway.spool) == 0, 10, what="spool emptied")
    log = gateway.log_text()
    assert "usage ledger: PostgreSQL at" in log
    assert "unavailable" in log
    assert "replayed" in log


def _sigterm_under_load(gateway: Gateway, key: dict[str, str], total: int) -> tuple[list[int | str], set[str]]:
    load = Load([gateway.url], key["key"], total=total, concurrency=16).start()
    poll(lambda: load.progress() >= total // 3, 120, 0.05, "load under way")
    code = gateway.stop(signal.SIGTERM)
    outcomes = load.wait()
    assert code == -signal.SIGTERM  # uvicorn drains, then dies by the signal it caught
    answered = {o.call_id for o in outcomes if o.status == 200 and o.call_id}
    assert len(answered) >= total // 3
    return [o.status for o in outcomes], answered


def test_sigterm_under_load_flushes_every_row(url: str, gateway: Gateway, key: dict[str, str]) -> None:
    statuses, answered = _sigterm_under_load(gateway, key, 1500)
    counts = ledger(url, key["prefix"])  # no waiting: the flush ran before the process ended
    assert answered <= set(counts)
    assert set(counts.values()) == {1}
    assert set(statuses) <= {200, "ConnectError", "ReadError", "RemoteProtocolError"}
    assert "usage ledger flushed at exit" in gateway.log_text()
    gateway.start()


def test_sigterm_with_the_database_down_spools_then_replays(url: str, postgres: PrivatePostgres, gateway: Gateway,
                                                            key: dict[str, str]) -> None:
    postgres.stop()
    try:
        _, answered = _sigterm_under_load(gateway, key, 900)
        assert free_spool_rows(gateway.spool) >= len(answered)
    finally:
        postgres.start()
    gateway.start()  # a new process replays the spool the old one left
    poll(lambda: answered <= set(ledger(url, key["prefix"])), 60, 0.5, "spooled rows replayed")
    assert set(ledger(url, key["prefix"]).values()) == {1}
    poll(lambda: free_spool_rows(gateway.spool) == 0, 10, what="spool emptied")


def test_database_down_at_start_cached_keys_served_unknown_keys_503(url: str, postgres: PrivatePostgres,
                                                                    gateway: Gateway, key: dict[str, str]) -> None:
    gateway.stop()
    postgres.stop()
    try:
        gateway.start()
        log = gateway.log_text()
        assert f"PostgreSQL at postgresql://postgres@127.0.0.1:{PG_PORT}/" in log
        assert "is unreachable" in log
        assert "serving the master key and 1 keys from the snapshot" in log

        def ask(api_key: str) -> httpx.Response:
            return httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {api_key}"},
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)

        cached = ask(key["key"])
        assert cached.status_code == 200
        unknown = ask("sk-bbbbbbbbbbbb_" + "B" * 43)
        assert unknown.status_code == 503
        assert unknown.headers["retry-after"] == "5"
        assert "key database is unreachable" in unknown.json()["error"]["message"]
        assert ask(MASTER_KEY).status_code == 200
        time.sleep(0.5)
    finally:
        postgres.start()
    call_id = cached.headers["x-litellm-call-id"]
    poll(lambda: call_id in ledger(url, key["prefix"]), 30, 0.5, "the request's row after the database returned")
    poll(lambda: ledger(url, "bbbbbbbbbbbb"), 30, 0.5, "the 503's row")
