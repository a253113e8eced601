"""The real coding agents against the real CPU vLLM, through the gateway, both ways each API can go.

The model is the tiny random-weight Llama (scripts/build_tiny_model.py) served with a 32k context
(VLLM_ALLOW_LONG_MAX_MODEL_LEN: random weights lose nothing past their 2048 positions): Claude Code's
prompt is ~5k tokens of this tokenizer, Codex's ~24k. `--chat-template-content-format string` because the
tiny ChatML template concatenates the system message as a string; vLLM's default for a template that also
loops over parts passes Claude Code's list content and the template fails. Its answers are gibberish that
never ends on its own: every answer stops at max tokens (64, the catalog's max_tokens and vLLM's default
via --override-generation-config), which Claude Code reports as "exceeded the 64 output token maximum"
after printing the text. What is checked is the path: the client's request reaches vLLM, its answer comes
back to the client, and the ledger records it under the user's key.

Gateway 14301 renders the model with the defaults (/v1/messages translated, /v1/responses passed through);
gateway 14302 with the opposite (litellm.messages_api: passthrough, litellm.responses_api: translate).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.clients_support import (
    ALIAS,
    ROOT,
    User,
    ensure_clients,
    json_lines,
    ledger,
    make_project,
    ok,
    start_gateway,
    wait_ledger,
)
from tests.e2e.keys_support import Gateway, create_key, poll, redis_namespace, scratch_database

pytestmark = pytest.mark.e2e
VLLM_PORT, DEFAULTS_PORT, OTHER_PORT = 15310, 14301, 14302
MODEL = "tiny-long"
TIMEOUT = 300
WEIGHTS = ROOT / ".local" / "models" / "tiny-cpu"


def model_file(**litellm: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in litellm.items())
    return f"""\
info:
  description: the tiny random-weight Llama with a long context, for the coding-agent tests
  params: 1.4M
  weights_gb: 0.005
  gpu_memory_gb: 0
  device: cpu
serve:
  port: {VLLM_PORT}
command: |
  vllm serve {WEIGHTS} --max-model-len 32768 --dtype bfloat16 --enforce-eager \\
    --enable-auto-tool-choice --tool-call-parser hermes --chat-template-content-format string \\
    --override-generation-config '{{"max_new_tokens": 64}}'
env:
  VLLM_CPU_KVCACHE_SPACE: "1"
  HF_HUB_OFFLINE: "1"
  VLLM_ALLOW_LONG_MAX_MODEL_LEN: "1"
litellm:
  max_tokens: 64
  timeout: {TIMEOUT}
{extra}"""


@dataclass
class Engine:
    gateways: dict[str, Gateway]  # "defaults" (messages translated, responses passed) and "other"
    users: dict[str, User]
    database_url: str


def _start_vllm(project_root: Path, folder: Path) -> subprocess.Popen[bytes]:
    """vLLM through the shared entrypoint (`confgen exec-vllm`, what ./runMe.sh runs)."""
    if not (WEIGHTS / "config.json").exists():
        subprocess.run([str(ROOT / ".venv-vllm" / "bin" / "python"), str(ROOT / "scripts" / "build_tiny_model.py"),
                        "--out", str(WEIGHTS)], check=True, capture_output=True, timeout=300)
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CONFGEN_ROOT", "PROMETHEUS_MULTIPROC_DIR", "MODEL")}
    env.update({"VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(folder), "VLLM_CACHE_ROOT": str(folder / "cache"),
                "PYTHONUNBUFFERED": "1"})
    argv = [str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "confgen", "--root", str(project_root), "exec-vllm",
            "--model", MODEL, "--out", str(folder / "generated")]
    with (folder / "vllm.log").open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    ensure_clients()
    folder = tmp_path_factory.mktemp("clients-vllm")
    projects = {"defaults": make_project(folder / "defaults", {MODEL: model_file()}, DEFAULTS_PORT),
                "other": make_project(folder / "other", {MODEL: model_file(messages_api="passthrough",
                                                                           responses_api="translate")}, OTHER_PORT)}
    vllm = _start_vllm(projects["defaults"].root, folder / "vllm")
    try:
        with scratch_database() as db, redis_namespace() as prefix:
            ports = {"defaults": DEFAULTS_PORT, "other": OTHER_PORT}
            gateways = {name: start_gateway(projects[name], [MODEL], ports[name], folder / name, db, prefix)
                        for name in projects}

            def healthy() -> bool:
                assert vllm.poll() is None, (folder / "vllm" / "vllm.log").read_text()[-3000:]
                try:
                    return httpx.get(f"http://127.0.0.1:{VLLM_PORT}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            poll(healthy, 300, 1.0, "the CPU vLLM healthy")
            (folder / "home").mkdir()
            (folder / "work").mkdir()
            users = {name: User(projects[name], folder / "home", folder / "work", db, ports[name]) for name in projects}
            try:
                yield Engine(gateways, users, db)
            finally:
                for gateway in gateways.values():
                    gateway.stop()
    finally:
        _stop(vllm)


@pytest.mark.parametrize("way", ["defaults", "other"])
def test_claude_code_answer_from_the_real_engine(engine: Engine, way: str) -> None:
    before = len(ledger(engine.database_url, ALIAS))
    done = engine.users[way].confgen("launch", "claude", "--model", MODEL, "--", "-p", "Say hello",
                                     "--output-format", "stream-json", "--verbose", timeout=TIMEOUT)
    events = json_lines(ok(done, "claude").stdout)
    texts = [block["text"] for e in events if e.get("type") == "assistant"
             for block in e["message"]["content"] if block.get("type") == "text"]
    assert texts and texts[0].strip(), events[-3:]
    result = events[-1]
    assert result["type"] == "result" and result.get("api_error_status") is None, result
    rows = wait_ledger(engine.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/messages", MODEL, 200)}
    assert rows[0]["completion_tokens"] == 64 and rows[0]["prompt_tokens"] > 1000


@pytest.mark.parametrize("way", ["defaults", "other"])
def test_codex_answer_from_the_real_engine(engine: Engine, way: str) -> None:
    before = len(ledger(engine.database_url, ALIAS))
    done = engine.users[way].confgen("launch", "codex", "--model", MODEL, "--", "exec", "--skip-git-repo-check",
                                     "--json", "Say hello", timeout=TIMEOUT)
    events = json_lines(ok(done, "codex").stdout)
    messages = [e["item"]["text"] for e in events if e.get("item", {}).get("type") == "agent_message"]
    assert messages and messages[-1], events[-3:]
    rows = wait_ledger(engine.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/responses", MODEL, 200)}
    assert rows[0]["prompt_tokens"] > 10_000 and rows[0]["completion_tokens"] > 0


def test_continue_cli_answer_from_the_real_engine(engine: Engine) -> None:
    user = engine.users["defaults"]
    ok(user.confgen("client", "continue", "--model", MODEL, "--write", isolate=False))
    before = len(ledger(engine.database_url, ALIAS))
    done = ok(user.run(["cn", "-p", "Say hello"], timeout=TIMEOUT, CONFGEN_API_KEY=user.key()), "cn")
    assert done.stdout.strip() and '"status":"error"' not in done.stdout, done.stdout
    rows = wait_ledger(engine.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/chat/completions", MODEL, 200)}


@pytest.mark.parametrize("way", ["defaults", "other"])
def test_sdk_requests_both_ways_land_in_the_ledger(engine: Engine, way: str) -> None:
    alias = f"sdk-{way}"
    key = create_key(engine.database_url, "--alias", alias)["key"]
    base = engine.gateways[way].url
    claude = anthropic.Anthropic(base_url=base, auth_token=key, api_key=None, max_retries=0, timeout=120)
    with claude.messages.stream(model=MODEL, max_tokens=8, system="Be brief.",
                                messages=[{"role": "user", "content": "Hello"}]) as stream:
        streamed = stream.get_final_message()
    assert streamed.usage.output_tokens == 8 and streamed.stop_reason == "max_tokens"
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
    response = client.responses.create(model=MODEL, input="Hello", max_output_tokens=8)
    assert response.output and response.usage is not None and response.usage.output_tokens == 8
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    chat = client.chat.completions.create(model=MODEL, max_tokens=8, tools=tools,
                                          messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    rows = wait_ledger(engine.database_url, alias, 3)
    assert sorted(r["route"] for r in rows) == ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
    assert all(r["status"] == 200 for r in rows), rows
    by_route = {r["route"]: r for r in rows}
    # Usage reaches the ledger on the passthrough paths too (the open question of the research notes).
    assert by_route["/v1/messages"]["completion_tokens"] == 8, json.dumps(rows, default=str)
    assert by_route["/v1/responses"]["completion_tokens"] == 8, json.dumps(rows, default=str)
