"""The nginx HTTPS gateway end to end: configs from `confgen nginx`, run by Debian's nginx on unprivileged
ports, with certificates from scripts/certs.sh, in front of the real stack (CPU vLLM + LiteLLM).

Two servers run against the stack: the default config (per-model paths through the gateway, a key
needed) and a --public-paths one (per-model paths straight to vLLM, no client key). Two more run in
front of a pacing upstream (below) to prove that streamed events are not buffered: on two shared
cores the CPU vLLM itself often delivers a short stream in one burst, so only an upstream that spaces
its events by a known second can tell an unbuffered proxy from a buffered one.
"""

from __future__ import annotations

import json
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.render import nginx
from tests.e2e.conftest import ROOT, Stack
from tests.e2e.keys_support import create_key
from tests.nginxproc import cleanup, make_certs, nginx_test, prefix_folder, running_nginx

pytestmark = pytest.mark.e2e
MODEL = "tiny-cpu"
GATED, GATED_HTTP = 18443, 18080
PUBLIC, PUBLIC_HTTP = 14710, 14711
PROBE_UPSTREAM = 14720
PROBE_GATED, PROBE_PUBLIC = 14721, 14723  # HTTP redirect ports: +1
PROBE_GAP_S = 1.0
CHAT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


@dataclass(frozen=True)
class Site:
    https: str
    ca: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.https, verify=ssl.create_default_context(cafile=str(self.ca)),
                            timeout=60, **kwargs)

    def openai(self, path: str, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.https}{path}", api_key=key, max_retries=0, timeout=60,
                             http_client=self.client())


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = prefix_folder("nginx-e2e-")
    yield path
    cleanup(path)


@pytest.fixture(scope="module")
def certs(workdir: Path) -> Path:
    return make_certs(workdir / "certs")


def render(out: Path, certs: Path, names: list[str], environ: dict[str, str], **options: Any) -> Path:
    selection = select(Project(ROOT), names, environ)
    nginx.write(selection, nginx.NginxOptions(certs=certs, **options), out, vllm_key="sk-probe-0123456789abcdef")
    return out


# --- nginx -t on every shape of config ---------------------------------------------------------

CONFIGS = {
    "default": ([MODEL], {}),
    "public": ([MODEL], {"public_paths": True}),
    "several models": ([MODEL, "gpt-oss-20b", "qwen3-coder-30b"], {}),
    "several models, public": ([MODEL, "gpt-oss-20b", "qwen3-coder-30b"], {"public_paths": True}),
    "ipv6 on 443/80": ([MODEL], {"listen": "::1", "https_port": 443, "http_port": 80}),
    "every interface": ([MODEL, "glm47-flash"], {"listen": "0.0.0.0", "max_conn_per_ip": 8}),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_nginx_t_accepts_every_generated_config(workdir: Path, certs: Path, name: str) -> None:
    names, options = CONFIGS[name]
    out = render(workdir / "t" / name.replace(" ", "-").replace(",", ""), certs, names, {}, **options)
    assert "test is successful" in nginx_test(out)


# --- the real stack behind nginx -----------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    gated: Site
    public: Site
    key: str
    vllm: str
    vllm_key: str
    litellm: str


@pytest.fixture(scope="module")
def gateway(stack: Stack, workdir: Path, certs: Path) -> Iterator[Gateway]:
    vllm_key = (ROOT / "secrets" / "VLLM_API_KEY").read_text().strip()
    selection = select(Project(ROOT), [MODEL], stack.env)
    gated, public = workdir / "gated", workdir / "public"
    nginx.write(selection, nginx.NginxOptions(certs=certs, https_port=GATED, http_port=GATED_HTTP), gated)
    nginx.write(selection, nginx.NginxOptions(certs=certs, https_port=PUBLIC, http_port=PUBLIC_HTTP,
                                              public_paths=True), public, vllm_key)
    for out in (gated, public):
        nginx_test(out)
    with running_nginx(gated, GATED), running_nginx(public, PUBLIC):
        yield Gateway(gated=Site(f"https://127.0.0.1:{GATED}", certs / "ca.crt"),
                      public=Site(f"https://127.0.0.1:{PUBLIC}", certs / "ca.crt"), key=stack.key,
                      vllm=f"http://127.0.0.1:{selection.models[0].port}", vllm_key=vllm_key,
                      litellm=stack.base)


def test_health_and_the_catalog(gateway: Gateway) -> None:
    with gateway.gated.client() as client:
        health = client.get("/health")
        assert (health.status_code, health.text) == (200, "healthy\n")
        models = client.get("/v1/models")
        assert models.status_code == 200
        assert models.headers["content-type"] == "application/json"
        assert models.json() == {"object": "list", "data": [
            {"id": MODEL, "object": "model", "endpoint": f"/{MODEL}/v1/chat/completions"}]}
        assert client.get(f"/{MODEL}/v1/models").json() == models.json()
        assert health.headers["server"] == "nginx"  # server_tokens off: no version


def test_http_redirects_to_https(gateway: Gateway) -> None:
    resp = httpx.get(f"http://127.0.0.1:{GATED_HTTP}/{MODEL}/v1/models?a=1", follow_redirects=False)
    assert resp.status_code == 301
    assert resp.headers["location"] == f"https://127.0.0.1:{GATED}/{MODEL}/v1/models?a=1"
    with gateway.gated.client(follow_redirects=True) as client:
        assert client.get(f"http://127.0.0.1:{GATED_HTTP}/health").text == "healthy\n"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_2_and_1_3_only_with_a_certificate_from_the_local_ca(gateway: Gateway) -> None:
    import socket

    def handshake(version: ssl.TLSVersion, cafile: Path | None) -> str:
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1: the server must refuse it
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", GATED), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return str(tls.version())

    ca = gateway.gated.ca
    assert handshake(ssl.TLSVersion.TLSv1_2, ca) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3, ca) == "TLSv1.3"
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):  # the server's alert
        handshake(ssl.TLSVersion.TLSv1_1, ca)
    with pytest.raises(ssl.SSLCertVerificationError):  # not trusted without the local CA
        handshake(ssl.TLSVersion.TLSv1_3, None)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"),
    ("GET", "/nope"),
    ("GET", f"/{MODEL}/"),
    ("GET", f"/{MODEL}/health"),  # vLLM's own routes outside /v1 are not exposed
    ("GET", "/metrics"),
    ("POST", "/qwen2.5-1.5b-instruct/v1/chat/completions"),  # in the catalog, not in the selection
    ("POST", f"/{MODEL}/v1/responses"),  # the gateway has no per-deployment route for it
])  # fmt: skip
def test_unknown_paths_and_models_are_404(gateway: Gateway, method: str, path: str) -> None:
    with gateway.gated.client() as client:
        resp = client.request(method, path, json=CHAT, headers={"Authorization": f"Bearer {gateway.key}"})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found"


def test_the_gateway_routes_need_a_key(gateway: Gateway) -> None:
    with gateway.gated.client() as client:
        for path in ("/v1/chat/completions", f"/{MODEL}/v1/chat/completions"):
            assert client.post(path, json={**CHAT, "model": MODEL}).status_code == 401
            assert client.post(path, json={**CHAT, "model": MODEL},
                               headers={"Authorization": "Bearer sk-wrong-key-0123456789"}).status_code == 401
        ok = client.post("/v1/chat/completions", json={**CHAT, "model": MODEL},
                         headers={"Authorization": f"Bearer {gateway.key}"})
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("model", [MODEL, ".local/models/tiny-cpu", "Qwen/Some-HF-Id", None])
def test_a_model_path_serves_its_model_whatever_the_body_names(gateway: Gateway, model: str | None) -> None:
    """Through the gateway the path picks the model (Azure-style deployments): catalog name, HF id or none."""
    body = {**CHAT, **({"model": model} if model else {})}
    with gateway.gated.client() as client:
        resp = client.post(f"/{MODEL}/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {gateway.key}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]


def test_a_model_path_holds_a_key_to_its_models_and_limits(gateway: Gateway, stack: Stack) -> None:
    """The body cannot lift a key onto a model path it may not use, and a path without a body model still
    counts against the key's rpm (confgen/gateway/requestmodel.py reads the path as LiteLLM does)."""
    url = stack.env["DATABASE_URL"]
    elsewhere = create_key(url, "--alias", "nginx-other-only", "--models", "other-model")["key"]
    limited = create_key(url, "--alias", "nginx-rpm-2", "--models", MODEL, "--rpm", "2")["key"]
    with gateway.gated.client() as client:
        refused = client.post(f"/{MODEL}/v1/chat/completions", json={**CHAT, "model": "other-model"},
                              headers={"Authorization": f"Bearer {elsewhere}"})
        assert refused.status_code == 403, refused.text
        assert f"may not use model '{MODEL}'" in refused.json()["error"]["message"]
        left = 60 - time.time() % 60
        if left < 20:
            time.sleep(left + 0.2)  # the three requests in one rpm window
        codes = [client.post(f"/{MODEL}/v1/chat/completions", json=CHAT,
                             headers={"Authorization": f"Bearer {limited}"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize(("model", "status"), [
    (MODEL, 200),
    (None, 200),  # vLLM 0.32 answers with its first served name when the body names none
    # tiny-cpu's "HF id" is a local path: not served as a name (only real hub ids are, see README)
    (".local/models/tiny-cpu", 404),
])  # fmt: skip
def test_a_public_path_needs_no_key(gateway: Gateway, model: str | None, status: int) -> None:
    body = {**CHAT, **({"model": model} if model else {})}
    with gateway.public.client() as client:
        # A client's own (wrong) key is replaced by nginx with the vLLM key.
        resp = client.post(f"/{MODEL}/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
    assert resp.status_code == status, resp.text
    if status == 200:
        assert resp.json()["model"] == MODEL
    else:
        assert "Valid aliases: tiny-cpu." in resp.json()["error"]["message"]


@pytest.mark.parametrize(("route", "path"), [("gated", f"/{MODEL}/v1"), ("gated", "/v1"), ("public", f"/{MODEL}/v1")])
def test_openai_sdk_chat_and_streaming_through_each_route(gateway: Gateway, route: str, path: str) -> None:
    site = gateway.gated if route == "gated" else gateway.public
    client = site.openai(path, gateway.key)
    assert [m.id for m in client.models.list().data] == [MODEL]  # the catalog, read by the SDK
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    assert reply.choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=16, stream=True))
    assert len(chunks) > 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _first_token_ms(client: httpx.Client, url: str, key: str) -> float:
    body = {**CHAT, "model": MODEL, "max_tokens": 16, "stream": True}
    start = time.perf_counter()
    with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                return (time.perf_counter() - start) * 1000
    raise AssertionError(f"no token streamed from {url}")


def test_first_token_through_nginx_is_close_to_direct(gateway: Gateway) -> None:
    """Interleaved pairs on warm connections; the bound is generous because the cores are shared."""
    pairs = {
        "public path vs vLLM": ((gateway.public, f"/{MODEL}/v1/chat/completions", "x"),
                                (gateway.vllm, "/v1/chat/completions", gateway.vllm_key)),
        "gated path vs LiteLLM": ((gateway.gated, f"/{MODEL}/v1/chat/completions", gateway.key),
                                  (gateway.litellm, "/v1/chat/completions", gateway.key)),
    }
    with gateway.gated.client() as tls, httpx.Client(timeout=60) as plain:
        for label, ((site, path, key), (direct, direct_path, direct_key)) in pairs.items():
            via, straight = [], []
            for _ in range(8):
                via.append(_first_token_ms(tls, site.https + path, key))
                straight.append(_first_token_ms(plain, direct + direct_path, direct_key))
            via, straight = via[1:], straight[1:]  # the first pair warms the connections
            added = statistics.median(v - s for v, s in zip(via, straight, strict=True))
            print(f"{label}: first token {statistics.median(via):.1f} ms via nginx, "
                  f"{statistics.median(straight):.1f} ms direct, added {added:+.1f} ms")
            assert added < 100, f"{label}: nginx adds {added:.0f} ms to the first token"


def test_body_size_limit(gateway: Gateway) -> None:
    with gateway.gated.client() as client:
        big = client.post("/v1/chat/completions", content=b"x" * (33 * 2**20),
                          headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"})
    assert big.status_code == 413
    assert big.json()["error"]["type"] == "too_large"


# --- a pacing upstream: buffering, the upstream's view, the connection limit -----------------------


class _Pacer(BaseHTTPRequestHandler):
    """Answers every POST with two SSE events PROBE_GAP_S apart, and records what it was sent."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test on purpose

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "size": len(body),
                          "connection": self.headers.get("Connection")})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'data: {"n": 0}\n\n')
        self.wfile.flush()
        time.sleep(PROBE_GAP_S)
        self.wfile.write(b'data: {"n": 1}\n\ndata: [DONE]\n\n')
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Probe:
    gated: Site
    public: Site
    seen: list[dict[str, Any]]


@pytest.fixture(scope="module")
def probe(workdir: Path, certs: Path) -> Iterator[Probe]:
    server = ThreadingHTTPServer(("127.0.0.1", PROBE_UPSTREAM), _Pacer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    upstream = str(PROBE_UPSTREAM)
    gated = render(workdir / "probe-gated", certs, [MODEL], {"LITELLM_PORT": upstream}, https_port=PROBE_GATED,
                   http_port=PROBE_GATED + 1, max_conn_per_ip=2)
    public = render(workdir / "probe-public", certs, [MODEL], {"VLLM_PORT": upstream}, https_port=PROBE_PUBLIC,
                    http_port=PROBE_PUBLIC + 1, public_paths=True, max_conn_per_ip=2)
    try:
        with running_nginx(gated, PROBE_GATED), running_nginx(public, PROBE_PUBLIC):
            yield Probe(Site(f"https://127.0.0.1:{PROBE_GATED}", certs / "ca.crt"),
                        Site(f"https://127.0.0.1:{PROBE_PUBLIC}", certs / "ca.crt"), _Pacer.seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _event_times(site: Site, path: str, body: bytes = b"{}") -> tuple[int, list[float]]:
    start = time.perf_counter()
    times = []
    with site.client() as client, client.stream("POST", path, content=body, headers={
            "Authorization": "Bearer sk-client", "Content-Type": "application/json"}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                times.append(time.perf_counter() - start)
    return resp.status_code, times


@pytest.mark.parametrize(("route", "path", "upstream_path", "upstream_auth"), [
    ("gated", f"/{MODEL}/v1/chat/completions", f"/openai/deployments/{MODEL}/chat/completions", "Bearer sk-client"),
    ("gated", "/v1/messages", "/v1/messages", "Bearer sk-client"),
    ("public", f"/{MODEL}/v1/chat/completions?x=1", "/v1/chat/completions?x=1", "Bearer sk-probe-0123456789abcdef"),
])  # fmt: skip
def test_streamed_events_pass_unbuffered(
    probe: Probe, route: str, path: str, upstream_path: str, upstream_auth: str
) -> None:
    probe.seen.clear()
    status, times = _event_times(probe.gated if route == "gated" else probe.public, path)
    assert status == 200
    assert len(times) == 3
    assert times[0] < PROBE_GAP_S / 2, f"the first event waited {times[0]:.2f} s: nginx buffered it"
    assert times[1] >= PROBE_GAP_S * 0.9
    # What the upstream got: the rewritten path, HTTP/1.1 keepalive, and the right key.
    assert probe.seen == [{"path": upstream_path, "auth": upstream_auth, "size": 2, "connection": None}]


def test_a_large_body_reaches_the_upstream(probe: Probe) -> None:
    """Bigger than nginx's in-memory body buffer: the unprivileged workers spool it in the prefix's tmp/."""
    probe.seen.clear()
    status, _ = _event_times(probe.public, f"/{MODEL}/v1/chat/completions", b"x" * 2**20)
    assert status == 200
    assert probe.seen[0]["size"] == 2**20


def test_connections_per_address_are_limited(probe: Probe) -> None:
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _event_times(probe.public, f"/{MODEL}/v1/chat/completions")[0], range(3)))
    assert sorted(results) == [200, 200, 429]
