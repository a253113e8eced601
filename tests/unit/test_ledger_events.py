"""confgen.ledger.events: LiteLLM's logging payloads (shapes as logged by LiteLLM 1.108.7) -> ledger rows."""

from __future__ import annotations

from typing import Any

from confgen.ledger.events import META_PREFIX, META_REQUEST_ID, build_row

START = 1795604715.5


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "chatcmpl-1", "litellm_call_id": "call-1", "model": "hosted_vllm/m", "model_group": "m",
        "api_base": "http://127.0.0.1:8000/v1/chat/completions", "prompt_tokens": 5, "completion_tokens": 7,
        "startTime": START, "endTime": START + 0.25, "completionStartTime": START + 0.05, "stream": None,
        "metadata": {"user_api_key_alias": "team-a", "user_api_key_request_route": "/v1/chat/completions",
                     "user_api_key_auth_metadata": {META_REQUEST_ID: "rid-1", META_PREFIX: "abcdefghijkl"}},
        "error_information": None,
    }
    base.update(changes)
    return base


class Rejected(Exception):
    confgen_rejection = True

    def __init__(self) -> None:
        super().__init__("over limit")
        self.status, self.reason, self.prefix, self.alias, self.request_id = 429, "rate_limited", "p", "a", "rid-2"


def test_success_row() -> None:
    row = build_row(payload(), None, True, "host:1")
    assert (row.request_id, row.call_id, row.key_prefix, row.key_alias, row.model) == (
        "rid-1", "call-1", "abcdefghijkl", "team-a", "m")
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.error_class, row.reason) == (200, 5, 7, None,
                                                                                                  None)
    assert row.latency_ms is not None
    assert abs(row.latency_ms - 250) < 0.01
    assert row.ttft_ms is None  # not streamed
    assert row.stream is False
    assert row.deployment == "http://127.0.0.1:8000/v1/chat/completions"
    assert row.ts.timestamp() == START
    assert row.instance == "host:1"


def test_streamed_row_has_ttft() -> None:
    row = build_row(payload(stream=True), None, True, "h")
    assert row.stream is True
    assert row.ttft_ms is not None
    assert abs(row.ttft_ms - 50) < 0.01


def test_backend_failure_row() -> None:
    info = {"error_code": "500", "error_class": "InternalServerError", "normalized_error": "500_INTERNAL"}
    exc = Exception("boom")
    row = build_row(payload(error_information=info, prompt_tokens=0, completion_tokens=0), exc, False, "h")
    assert (row.request_id, row.status, row.error_class, row.reason) == ("rid-1", 500, "InternalServerError",
                                                                         "500_INTERNAL")


def test_rejected_by_our_auth_carries_its_identity() -> None:
    meta = {"user_api_key_alias": None, "user_api_key_auth_metadata": {}, "user_api_key_request_route": "/v1/x"}
    row = build_row(payload(metadata=meta, api_base="", prompt_tokens=0, completion_tokens=0), Rejected(), False,
                    "h")
    assert (row.request_id, row.status, row.key_prefix, row.key_alias, row.reason) == ("rid-2", 429, "p", "a",
                                                                                         "rate_limited")
    assert row.deployment is None
    assert row.error_class == "Rejected"


def test_unknown_status_is_500_and_missing_ids_fall_back_to_the_call_id() -> None:
    row = build_row(payload(metadata={}, error_information={"error_code": "x"}), Exception(), False, "h")
    assert row.status == 500
    assert row.request_id == "call-1"
