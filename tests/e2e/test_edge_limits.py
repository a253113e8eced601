"""Request hygiene at the gateway's edge (confgen/gateway/edge.py) through the real LiteLLM proxy on our config,
in front of the simulator: a body over the size limit gets 413 (by Content-Length, and counted when it is
chunked), headers over their limit get 431, a body that stalls gets 408, and the gateway keeps serving.

The limits are set small through the gateway's environment so the test sends little. Raw sockets where
an HTTP client would not send what a hostile one does. Ports: gateway 14745, simulator 18745; database
helperc_edge_<random>, Redis keys under helperc_edge_<random>:.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.keys_support import (
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    redis_namespace,
    render_config,
    scratch_database,
)
from tests.simproc import running_sim

pytestmark = pytest.mark.e2e
GATEWAY_PORT, SIM_PORT = 14745, 18745
MAX_BODY = 1024 * 1024  # CONFGEN_MAX_BODY_MB=1
MAX_HEADERS = 16 * 1024  # CONFGEN_MAX_HEADER_KB=16
BODY_TIMEOUT_S = 2.0


@dataclass
class EdgeGateway(Gateway):
    def env(self) -> dict[str, str]:
        return {**super().env(), "CONFGEN_MAX_BODY_MB": "1", "CONFGEN_MAX_HEADER_KB": "16",
                "CONFGEN_BODY_TIMEOUT": str(BODY_TIMEOUT_S)}


@dataclass(frozen=True)
class Served:
    gateway: Gateway
    key: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("edge")
    with scratch_database(prefix="confgen_edge_") as url, redis_namespace() as prefix, running_sim(
            SIM_PORT, "--served-model-name", MODEL, "--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4",
            "--max-model-len", "1000000", env={"VLLM_API_KEY": VLLM_KEY}):
        gateway = EdgeGateway(GATEWAY_PORT, render_config(folder / "generated", SIM_PORT), folder / "gw", url, prefix)
        try:
            gateway.start()
            yield Served(gateway, create_key(url, "--alias", "edge")["key"])
        finally:
            gateway.stop()


def chat(content: str) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": content}]}).encode()


def post(served: Served, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{served.gateway.url}/v1/chat/completions", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {served.key}", "Content-Type": "application/json",
                               **(headers or {})})


def assert_still_serving(served: Served) -> None:
    assert httpx.get(f"{served.gateway.url}/health/liveliness", timeout=5).status_code == 200
    assert post(served, chat("hi")).status_code == 200


def error_of(response: httpx.Response) -> dict[str, object]:
    error: dict[str, object] = response.json()["error"]
    return error


def test_a_body_just_under_the_limit_is_served(served: Served) -> None:
    body = chat("x" * (MAX_BODY - 200))
    assert len(body) <= MAX_BODY
    response = post(served, body)
    assert response.status_code == 200, response.text


def test_a_body_over_the_limit_gets_413_by_content_length(served: Served) -> None:
    response = post(served, chat("x" * (4 * MAX_BODY)))
    assert response.status_code == 413
    assert error_of(response) == {"message": f"request body larger than {MAX_BODY} bytes",
                                  "type": "request_too_large", "param": None, "code": "413"}
    assert response.headers["connection"] == "close"
    assert_still_serving(served)


def test_a_chunked_body_over_the_limit_gets_413(served: Served) -> None:
    body = chat("x" * (4 * MAX_BODY))

    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    response = post(served, chunks())
    assert response.status_code == 413
    assert error_of(response)["type"] == "request_too_large"
    assert_still_serving(served)
    assert "refused POST /v1/chat/completions from 127.0.0.1: 413" in served.gateway.log_text()


def test_headers_over_the_limit_get_431(served: Served) -> None:
    response = post(served, chat("hi"), headers={"X-Padding": "a" * (2 * MAX_HEADERS)})
    assert response.status_code == 431
    assert error_of(response)["type"] == "request_header_fields_too_large"
    many = {f"X-Padding-{i}": "a" * 1000 for i in range(20)}  # 20 KB in many headers
    assert post(served, chat("hi"), headers=many).status_code == 431
    assert_still_serving(served)


def raw_exchange(served: Served, head: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send `head` (and whatever body part it holds), then only read: (what came back, seconds until closed)."""
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=wait_s) as sock:
        sock.sendall(head)
        started, answer = time.monotonic(), b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer, time.monotonic() - started


def test_a_body_that_stalls_gets_408_and_the_connection_is_closed(served: Served) -> None:
    body = chat("hi")
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {served.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answer, seconds = raw_exchange(served, head + body[:10], wait_s=BODY_TIMEOUT_S + 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"type": "request_timeout"' in answer
    assert BODY_TIMEOUT_S - 0.5 <= seconds <= BODY_TIMEOUT_S + 5  # cut off, and closed (recv got EOF)
    assert_still_serving(served)


def test_a_slow_body_that_keeps_coming_is_not_cut(served: Served) -> None:
    """The timeout is for silence, not for the whole body: a slow but steady sender is served."""
    body = chat("hi")
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {served.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.gateway.port), timeout=30) as sock:
        sock.sendall(head)
        step = max(1, len(body) // 4)
        for start in range(0, len(body), step):
            time.sleep(BODY_TIMEOUT_S / 2)
            sock.sendall(body[start:start + step])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_the_limits_are_said_at_start(served: Served) -> None:
    assert "request limits: bodies up to 1 MiB, headers up to 16 KiB, a body may stall 2 s" in served.gateway.log_text()


def test_no_traceback_in_the_log(served: Served) -> None:
    """Runs last: none of the refusals above made LiteLLM log an error."""
    text = served.gateway.log_text()
    assert "Traceback" not in text
    assert "Exception occured" not in text
