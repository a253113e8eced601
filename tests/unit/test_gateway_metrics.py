"""confgen.gateway.metrics: the counters our gateway modules increment, alone and across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from confgen.gateway import metrics


def value(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_known_series_exist_before_any_event() -> None:
    for reason in metrics.REJECTION_REASONS:
        assert REGISTRY.get_sample_value("confgen_rejected_requests_total", {"reason": reason}) is not None
    for result in ("hit", "miss"):
        assert REGISTRY.get_sample_value("confgen_auth_cache_lookups_total", {"result": result}) is not None
    for outcome in metrics.LEDGER_OUTCOMES:
        assert REGISTRY.get_sample_value("confgen_ledger_rows_total", {"outcome": outcome}) is not None
    assert REGISTRY.get_sample_value("confgen_ledger_spool_rows") is not None


@pytest.mark.parametrize(("reason", "label"), [
    ("revoked_key", "revoked_key"),
    ("a_new_check", "a_new_check"),
    ("Revoked Key", "other"),
    ("'; DROP TABLE keys; --", "other"),
    ("x" * 41, "other"),
    ("", "other"),
])
def test_rejections_by_bounded_reason(reason: str, label: str) -> None:
    before = value("confgen_rejected_requests_total", reason=label)
    metrics.record_rejection(reason)
    assert value("confgen_rejected_requests_total", reason=label) == before + 1


def test_auth_cache_hits_and_misses() -> None:
    hits, misses = (value("confgen_auth_cache_lookups_total", result=r) for r in ("hit", "miss"))
    metrics.record_auth_cache(hit=True)
    metrics.record_auth_cache(hit=True)
    metrics.record_auth_cache(hit=False)
    assert value("confgen_auth_cache_lookups_total", result="hit") == hits + 2
    assert value("confgen_auth_cache_lookups_total", result="miss") == misses + 1


def test_ledger_rows_and_spool_size() -> None:
    before = {o: value("confgen_ledger_rows_total", outcome=o) for o in metrics.LEDGER_OUTCOMES}
    metrics.record_ledger(written=5, spooled=3)
    metrics.record_ledger(replayed=3, written=-2)  # a count below 1 is ignored, never raised
    after = {o: value("confgen_ledger_rows_total", outcome=o) for o in metrics.LEDGER_OUTCOMES}
    assert {o: after[o] - before[o] for o in after} == {"written": 5, "spooled": 3, "replayed": 3}
    metrics.set_spool_size(7)
    assert value("confgen_ledger_spool_rows") == 7
    metrics.set_spool_size(-1)
    assert value("confgen_ledger_spool_rows") == 0


WORKER = """
from confgen.gateway import metrics
metrics.record_rejection("revoked_key")
metrics.record_auth_cache(hit=True)
metrics.record_ledger(written={n}, spooled=1)
metrics.set_spool_size({n})
"""


def test_several_processes_are_summed(tmp_path: Path) -> None:
    """What the gateway does with LITELLM_NUM_WORKERS > 1: each worker writes its own files in
    PROMETHEUS_MULTIPROC_DIR, and a scrape (any worker's) reads all of them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (2, 5):
        subprocess.run([sys.executable, "-c", WORKER.format(n=n)], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert value("confgen_rejected_requests_total", registry, reason="revoked_key") == 2
    assert value("confgen_rejected_requests_total", registry, reason="invalid_key") == 0
    assert value("confgen_auth_cache_lookups_total", registry, result="hit") == 2
    assert value("confgen_ledger_rows_total", registry, outcome="written") == 7
    assert value("confgen_ledger_rows_total", registry, outcome="spooled") == 2
    # livesum: each worker reports its own spool; the live ones are added up.
    assert value("confgen_ledger_spool_rows", registry) == 7


def test_model_label_is_a_served_name_or_other() -> None:
    served = {"glm47-flash", "tiny-cpu"}
    assert metrics.model_label("tiny-cpu", served) == "tiny-cpu"
    assert metrics.model_label("gpt-5-made-up", served) == "other"
    assert metrics.model_label(None, served) == "other"
    assert metrics.model_label(["tiny-cpu"], served) == "other"


def test_an_answer_counts_the_request_tokens_latency_and_ttft() -> None:
    labels = {"model": "m-answer", "api_key_alias": "alice"}
    metrics.record_answer("m-answer", "alice", prompt_tokens=12, completion_tokens=5, latency_s=0.3, ttft_s=0.04)
    metrics.record_answer("m-answer", "alice", prompt_tokens=3, completion_tokens=0, latency_s=1.5, ttft_s=None)
    assert value("confgen_requests_total", **labels, status_code="200") == 2
    assert value("confgen_input_tokens_total", **labels) == 15
    assert value("confgen_output_tokens_total", **labels) == 5
    assert value("confgen_request_latency_seconds_count", **labels) == 2
    assert value("confgen_request_latency_seconds_bucket", **labels, le="0.5") == 1
    assert value("confgen_request_latency_seconds_sum", **labels) == pytest.approx(1.8)
    assert value("confgen_time_to_first_token_seconds_count", **labels) == 1  # only the stream
    assert value("confgen_time_to_first_token_seconds_bucket", **labels, le="0.05") == 1


def test_a_failure_counts_under_its_status() -> None:
    metrics.record_failure("m-fail", None, 401)
    metrics.record_failure("m-fail", None, 401)
    metrics.record_failure("m-fail", "bob", 429)
    metrics.record_failure("m-fail", "bob", 0)  # no usable status: counted as 500
    assert value("confgen_requests_total", model="m-fail", api_key_alias="", status_code="401") == 2
    assert value("confgen_requests_total", model="m-fail", api_key_alias="bob", status_code="429") == 1
    assert value("confgen_requests_total", model="m-fail", api_key_alias="bob", status_code="500") == 1
    assert REGISTRY.get_sample_value("confgen_input_tokens_total", {"model": "m-fail", "api_key_alias": ""}) is None
