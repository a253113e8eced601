"""The local stack end to end: ./runMe.sh -> real CPU vLLM -> real LiteLLM, with the official SDKs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import ROOT, VLLM_PORT, Stack

pytestmark = pytest.mark.e2e
MODEL = "tiny-cpu"


def _oa(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base}/v1", api_key=key or stack.key, max_retries=0, timeout=60)


def test_start_prints_endpoint_and_never_the_key(stack: Stack) -> None:
    state = json.loads((stack.run_dir / "state.json").read_text())
    assert state["model"] == MODEL
    assert {p["name"] for p in state["procs"]} == {"vllm", "litellm"}
    logs = "".join(p.read_text(errors="replace") for p in (stack.run_dir / "logs").glob("*.log"))
    assert stack.key not in logs
    generated = (stack.run_dir / "generated" / "config.yaml").read_text()
    assert stack.key not in generated
    assert "os.environ/LITELLM_MASTER_KEY" in generated
    assert oct((ROOT / "secrets" / "LITELLM_MASTER_KEY").stat().st_mode & 0o777) == "0o600"


def test_models_lists_the_catalog_model(stack: Stack) -> None:
    assert [m.id for m in _oa(stack).models.list().data] == [MODEL]


def test_chat_completion(stack: Stack) -> None:
    reply = _oa(stack).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                               max_tokens=8)
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None
    assert reply.usage.completion_tokens >= 1


def test_chat_streaming_with_usage(stack: Stack) -> None:
    chunks = list(_oa(stack).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    assert text
    assert usage
    assert usage[-1].completion_tokens >= 1


def test_completions(stack: Stack) -> None:
    reply = _oa(stack).completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert reply.choices[0].text


def test_anthropic_messages(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.base, auth_token=stack.key, api_key=None, max_retries=0)
    reply = client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
    assert reply.role == "assistant"
    assert reply.usage.output_tokens >= 1


def test_anthropic_messages_streaming(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.base, auth_token=stack.key, api_key=None, max_retries=0)
    with client.messages.stream(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert events[0] == "message_start"
    assert "message_stop" in events
    assert final.usage.output_tokens >= 1


def _vllm_params_after(stack: Stack, mark: int) -> str:
    log = (stack.run_dir / "logs" / f"vllm-{MODEL}.log").read_text(errors="replace")[mark:]
    lines = [line for line in log.splitlines() if "Received request" in line]
    assert lines, "vLLM logged no request (--enable-log-requests in models/tiny-cpu.yml)"
    return lines[-1]


def test_sampling_defaults_reach_vllm(stack: Stack) -> None:
    """With no sampling parameters from the client, vLLM runs the catalog's (model file > vars.env)."""
    log = stack.run_dir / "logs" / f"vllm-{MODEL}.log"
    mark = len(log.read_text(errors="replace"))
    _oa(stack).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    params = _vllm_params_after(stack, mark)
    for expected in ("temperature=0.7", "top_p=0.9", "top_k=50", "repetition_penalty=1.1", "max_tokens=64"):
        assert expected in params, params


def test_client_sampling_wins_over_defaults(stack: Stack) -> None:
    log = stack.run_dir / "logs" / f"vllm-{MODEL}.log"
    mark = len(log.read_text(errors="replace"))
    _oa(stack).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       temperature=0.2, max_tokens=5)
    params = _vllm_params_after(stack, mark)
    assert "temperature=0.2" in params, params
    assert "max_tokens=5" in params, params


@pytest.mark.parametrize("key", [None, "sk-wrong-key-0123456789"])
def test_bad_or_missing_key_is_401(stack: Stack, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(f"{stack.base}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 401


def test_unknown_model_is_4xx_in_openai_shape(stack: Stack) -> None:
    resp = httpx.post(f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.key}"},
                      json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
    assert 400 <= resp.status_code < 500
    assert "error" in resp.json()
    assert "message" in resp.json()["error"]


def test_second_start_says_running(stack: Stack) -> None:
    again = stack.runme()
    assert again.returncode == 0
    assert "already running: tiny-cpu" in again.stdout
    other = stack.runme(extra_env={"MODEL": "qwen2.5-1.5b-instruct"})
    assert other.returncode == 3
    assert "tiny-cpu is already running" in other.stderr


def test_status(stack: Stack) -> None:
    result = stack.runme("status")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[3] for line in lines if " pid " in line] == ["healthy", "healthy"]
    # Each replica the gateway routes to, as its /health sees it (README: Several replicas and nodes).
    assert "  deployments: 1 healthy, 0 unhealthy" in lines
    assert any(line.split() == [MODEL, f"http://127.0.0.1:{VLLM_PORT}/v1", "healthy"] for line in lines), lines


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_zz_vllm_down_gives_clean_5xx_then_recovers(stack: Stack) -> None:
    """Runs last: vLLM dies mid-run, the gateway answers 5xx and keeps serving; vLLM returns, so does it."""
    state = json.loads((stack.run_dir / "state.json").read_text())
    vllm = next(p for p in state["procs"] if p["name"] == "vllm")
    os.killpg(vllm["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _healthy(vllm["url"]):
        time.sleep(0.5)
    headers = {"Authorization": f"Bearer {stack.key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    resp = httpx.post(f"{stack.base}/v1/chat/completions", headers=headers, json=body, timeout=60)
    assert 500 <= resp.status_code < 600
    assert "error" in resp.json()
    assert httpx.get(f"{stack.base}/health/liveliness", timeout=10).status_code == 200
    assert stack.runme("status").returncode == 3

    # Bring vLLM back through the same entrypoint the stack uses; the gateway serves again.
    log = open(stack.run_dir / "logs" / "vllm-restart.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "confgen", "--root", str(ROOT),
                             "exec-vllm", "--model", MODEL, "--out", str(stack.run_dir / "generated")],
                            env={**stack.env, "VLLM_HOST_IP": "127.0.0.1"}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _healthy(vllm["url"]):
            assert proc.poll() is None, "restarted vLLM exited"
            time.sleep(1)
        resp = httpx.post(f"{stack.base}/v1/chat/completions", headers=headers, json=body, timeout=60)
        assert resp.status_code == 200
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        raise
    finally:
        log.close()
    # The restarted vLLM now serves the stack: record it so later tests use it and `stop` ends it.
    state["procs"] = [p if p["name"] != "vllm" else {**p, "pid": proc.pid} for p in state["procs"]]
    (stack.run_dir / "state.json").write_text(json.dumps(state))
