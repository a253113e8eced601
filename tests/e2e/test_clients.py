"""The real coding agents (pinned in clients/) on our gateway in front of the vLLM-API simulator.

Two simulated models: `sim-native` with the defaults (/v1/messages translated by LiteLLM, /v1/responses
passed to the backend's own) and `sim-bridge` (litellm.responses_api: translate, /v1/responses translated
to chat completions). Every agent runs as a user would: `confgen launch` or the files `confgen client
--write` wrote, a scratch HOME, a key of the user's own made on first use, and no network but the gateway and
PostgreSQL (tests/e2e/netns.py). The simulator answers with a tool call when the user says `call tool NAME`.

Every test runs twice: with the relay lane on (the default: vLLM-native requests relayed as bytes,
confgen/gateway/lane.py) and off (LiteLLM's own path), one gateway at a time on the same port (the agents'
network namespace lets only that port through).
"""

from __future__ import annotations

import json
import sys
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
    User,
    ensure_clients,
    json_lines,
    ledger,
    make_project,
    ok,
    sim_model,
    start_gateway,
    wait_ledger,
)
from tests.e2e.keys_support import MASTER_KEY, VLLM_KEY, Gateway, create_key, redis_namespace, scratch_database
from tests.simproc import SimProc, running_sim

pytestmark = pytest.mark.e2e
GATEWAY_PORT, SIM_NATIVE, SIM_BRIDGE, NOBODY = 14300, 15300, 15301, 15302
CLIENT_TIMEOUT = 120


@dataclass
class Setup:
    gateway: Gateway
    sims: dict[str, SimProc]
    user: User
    database_url: str
    lane: str  # "on" or "off"


@pytest.fixture(scope="module", params=["lane-on", "lane-off"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    ensure_clients()
    lane = request.param.removeprefix("lane-")
    folder = tmp_path_factory.mktemp(f"clients-{lane}")
    fast = ("--ttft-ms", "2", "--itl-ms", "1", "--max-model-len", "32768")
    env = {"VLLM_API_KEY": VLLM_KEY}
    with scratch_database() as db, redis_namespace() as prefix, \
            running_sim(SIM_NATIVE, "--served-model-name", "sim-native", *fast, env=env) as native, \
            running_sim(SIM_BRIDGE, "--served-model-name", "sim-bridge", *fast, env=env) as bridge:
        project = make_project(folder / "project", {
            "sim-native": sim_model(SIM_NATIVE),
            "sim-bridge": sim_model(SIM_BRIDGE, responses_api="translate"),
            "not-served": sim_model(NOBODY),  # in the catalog, not behind this gateway
        }, GATEWAY_PORT)
        gateway = start_gateway(project, ["sim-native", "sim-bridge"], GATEWAY_PORT, folder=folder, database_url=db,
                                redis_prefix=prefix, lane=lane)
        (folder / "home").mkdir()
        (folder / "work").mkdir()
        user = User(project, folder / "home", folder / "work", db, GATEWAY_PORT)
        try:
            yield Setup(gateway, {"sim-native": native, "sim-bridge": bridge}, user, db, lane)
        finally:
            gateway.stop()


@pytest.fixture
def sims(setup: Setup) -> Iterator[dict[str, SimProc]]:
    clear = {"error_rate": 0, "error_status": 500, "hang": False, "slow_start_s": 0, "drop_after_chunks": None}
    for sim in setup.sims.values():
        sim.set_faults(**clear)
        sim.reset_stats()
    yield setup.sims
    for sim in setup.sims.values():
        sim.set_faults(**clear)


def _claude_result(done: Any) -> dict[str, Any]:
    ok(done, "claude")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False, result
    return result


def test_the_gateway_says_which_lane_serves_the_agents(setup: Setup) -> None:
    """What the agents below go through: Codex's /v1/responses to sim-native is relayed as bytes with the lane
    on; Claude Code's /v1/messages is translated by LiteLLM on both (messages_api: translate, the default)."""
    answer = httpx.get(f"{setup.gateway.url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=60)
    lanes = answer.json()["confgen_lanes"]
    relay = "relay" if setup.lane == "on" else "litellm"
    assert lanes["enabled"] is (setup.lane == "on")
    assert lanes["models"]["sim-native"]["responses"] == relay
    assert lanes["models"]["sim-native"]["chat"] == relay
    assert lanes["models"]["sim-native"]["messages"] == "litellm"


# --- Claude Code: /v1/messages (translated to chat completions) ---

def test_launch_claude_plain_answer_with_the_users_own_key(setup: Setup, sims: dict[str, SimProc]) -> None:
    before = len(ledger(setup.database_url, ALIAS))
    done = setup.user.confgen("launch", "claude", "--model", "sim-native", "--",
                              "-p", "Say hello", "--output-format", "json", timeout=CLIENT_TIMEOUT)
    result = _claude_result(done)
    assert result["result"].startswith("lorem ipsum")
    key = setup.user.key()
    assert key.startswith("sk-")
    assert key not in done.stdout + done.stderr
    assert f"key: your key '{ALIAS}'" in done.stderr
    rows = wait_ledger(setup.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/messages", "sim-native", 200)}
    assert rows[0]["prompt_tokens"] > 1000
    assert rows[0]["completion_tokens"] > 0
    assert sims["sim-native"].stats()["by_kind"] == {"chat": len(rows)}


def test_launch_claude_runs_the_tool_the_model_asks_for(setup: Setup, sims: dict[str, SimProc]) -> None:
    before = len(ledger(setup.database_url, ALIAS))
    target = setup.user.work / "claude-tool.txt"
    target.unlink(missing_ok=True)
    call = {"command": f"echo from-claude > {target.name}", "description": "write a file"}
    done = setup.user.confgen("launch", "claude", "--model", "sim-native", "--",
                              "-p", f"call tool Bash {json.dumps(call)}", "--output-format", "json",
                              "--allowedTools", "Bash", timeout=CLIENT_TIMEOUT)
    result = _claude_result(done)
    assert target.read_text().strip() == "from-claude"
    assert result["num_turns"] >= 2
    rows = wait_ledger(setup.database_url, ALIAS, before + 2)[before:]
    assert [r["route"] for r in rows] == ["/v1/messages", "/v1/messages"]
    # The second request carries the tool's result back: a longer prompt than the first.
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"]


def test_claude_code_with_the_settings_confgen_client_wrote(setup: Setup, sims: dict[str, SimProc]) -> None:
    settings = setup.user.home / ".claude" / "settings.json"
    settings.parent.mkdir(exist_ok=True)
    settings.write_text(json.dumps({"env": {"ANTHROPIC_API_KEY": "sk-ant-elsewhere", "MY_OWN": "1"},
                                    "theme": "dark"}))
    wrote = ok(setup.user.confgen("client", "claude-code", "--model", "sim-native", "--write", isolate=False))
    assert f"merged into {settings}" in wrote.stdout
    doc = json.loads(settings.read_text())
    assert doc["theme"] == "dark"
    assert doc["env"]["MY_OWN"] == "1"
    assert "ANTHROPIC_API_KEY" not in doc["env"]
    assert setup.user.key() not in settings.read_text()
    assert list(settings.parent.glob("settings.json.bak-*"))
    before = len(ledger(setup.database_url, ALIAS))
    result = _claude_result(setup.user.run(["claude", "-p", "Say hello", "--output-format", "json"],
                                           timeout=CLIENT_TIMEOUT))
    assert result["result"].startswith("lorem ipsum")
    assert wait_ledger(setup.database_url, ALIAS, before + 1)[-1]["route"] == "/v1/messages"
    settings.unlink()


# --- Codex CLI: /v1/responses, passed through (sim-native) or translated (sim-bridge) ---

def _codex_events(done: Any) -> list[dict[str, Any]]:
    ok(done, "codex")
    events = json_lines(done.stdout)
    assert events[-1]["type"] == "turn.completed", events
    return events


@pytest.mark.parametrize(("model", "backend_api"), [("sim-native", "responses"), ("sim-bridge", "chat")])
def test_launch_codex_plain_answer(setup: Setup, sims: dict[str, SimProc], model: str, backend_api: str) -> None:
    before = len(ledger(setup.database_url, ALIAS))
    events = _codex_events(setup.user.confgen("launch", "codex", "--model", model, "--", "exec",
                                              "--skip-git-repo-check", "--json", "Say hello", timeout=CLIENT_TIMEOUT))
    messages = [e["item"]["text"] for e in events if e.get("item", {}).get("type") == "agent_message"]
    assert messages
    assert messages[-1].startswith("lorem ipsum")
    rows = wait_ledger(setup.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/responses", model, 200)}
    assert sims[model].stats()["by_kind"] == {backend_api: len(rows)}


@pytest.mark.parametrize(("model", "backend_api"), [("sim-native", "responses"), ("sim-bridge", "chat")])
def test_launch_codex_runs_the_tool_the_model_asks_for(setup: Setup, sims: dict[str, SimProc], model: str,
                                                       backend_api: str) -> None:
    before = len(ledger(setup.database_url, ALIAS))
    call = json.dumps({"cmd": "echo from-codex-$((40+2))"})
    events = _codex_events(setup.user.confgen("launch", "codex", "--model", model, "--", "exec",
                                              "--skip-git-repo-check", "--json", f"call tool exec_command {call}",
                                              timeout=CLIENT_TIMEOUT))
    ran = [e["item"] for e in events if e.get("item", {}).get("type") == "command_execution"
           and e["type"] == "item.completed"]
    assert ran
    assert ran[0]["aggregated_output"].strip() == "from-codex-42"
    assert ran[0]["exit_code"] == 0
    assert events[-2]["item"]["type"] == "agent_message"  # the model answered after the tool's result
    rows = wait_ledger(setup.database_url, ALIAS, before + 2)[before:]
    assert [r["route"] for r in rows] == ["/v1/responses", "/v1/responses"]
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"]
    assert sims[model].stats()["by_kind"] == {backend_api: 2}


def test_codex_with_the_config_confgen_client_wrote(setup: Setup, sims: dict[str, SimProc]) -> None:
    codex_home = setup.user.home / "codex-home"
    wrote = ok(setup.user.confgen("client", "codex", "--model", "sim-bridge", "--model", "sim-native", "--write",
                                  isolate=False, CODEX_HOME=str(codex_home)))
    assert f"wrote {codex_home / 'config.toml'}" in wrote.stdout
    before = len(ledger(setup.database_url, ALIAS))
    argv = ["codex", "exec", "--skip-git-repo-check", "--json", "--profile", "sim-native", "Say hello"]
    _codex_events(setup.user.run(argv, timeout=CLIENT_TIMEOUT, CODEX_HOME=str(codex_home),
                                 CONFGEN_API_KEY=setup.user.key()))
    assert wait_ledger(setup.database_url, ALIAS, before + 1)[-1]["model"] == "sim-native"
    assert sims["sim-native"].stats()["by_kind"] == {"responses": 1}


# --- Continue CLI: /v1/chat/completions ---

def test_continue_cli_with_the_config_confgen_client_wrote(setup: Setup, sims: dict[str, SimProc]) -> None:
    config = setup.user.home / ".continue" / "config.yaml"
    ok(setup.user.confgen("client", "continue", "--model", "sim-native", "--write", isolate=False))
    assert "${{ secrets.CONFGEN_API_KEY }}" in config.read_text()
    before = len(ledger(setup.database_url, ALIAS))
    done = ok(setup.user.run(["cn", "-p", "Say hello"], timeout=CLIENT_TIMEOUT, CONFGEN_API_KEY=setup.user.key()),
              "cn")
    assert "lorem ipsum" in done.stdout, done.stdout  # cn exits 0 on API errors too: the answer is the proof
    rows = wait_ledger(setup.database_url, ALIAS, before + 1)[before:]
    assert {(r["route"], r["model"], r["status"]) for r in rows} == {("/v1/chat/completions", "sim-native", 200)}


# --- the endpoints themselves, with a key from `confgen keys create` ---

def test_every_agent_endpoint_records_usage_under_the_key(setup: Setup, sims: dict[str, SimProc]) -> None:
    made = create_key(setup.database_url, "--alias", "sdk-user")
    key, base = made["key"], setup.gateway.url
    tools_oa: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    claude = anthropic.Anthropic(base_url=base, auth_token=key, api_key=None, max_retries=0, timeout=30)
    with claude.messages.stream(model="sim-native", max_tokens=64, tools=[{
            "name": "get_weather", "input_schema": {"type": "object"}}],
            messages=[{"role": "user", "content": 'call tool get_weather {"city": "Oslo"}'}]) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [("tool_use", {"city": "Oslo"})]
    assert final.stop_reason == "tool_use"
    counted = httpx.post(f"{base}/v1/messages/count_tokens", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                         json={"model": "sim-native", "messages": [{"role": "user", "content": "Hello there"}]})
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] > 0
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    chat = client.chat.completions.create(model="sim-native", tools=tools_oa,
                                          messages=[{"role": "user", "content": "call tool get_weather"}])
    assert chat.choices[0].message.tool_calls
    assert chat.choices[0].message.tool_calls[0].function.name == "get_weather"
    for model in ("sim-native", "sim-bridge"):
        response = client.responses.create(model=model, input="call tool get_weather",
                                           tools=[{"type": "function", "name": "get_weather",
                                                   "parameters": {"type": "object"}}])
        assert [(o.type, getattr(o, "name", None)) for o in response.output] == [("function_call", "get_weather")]
    rows = wait_ledger(setup.database_url, "sdk-user", 4)
    assert sorted((r["route"], r["model"]) for r in rows if r["route"] != "/v1/messages/count_tokens") == [
        ("/v1/chat/completions", "sim-native"), ("/v1/messages", "sim-native"), ("/v1/responses", "sim-bridge"),
        ("/v1/responses", "sim-native")]
    answered = [r for r in rows if r["route"] != "/v1/messages/count_tokens"]
    assert all(r["status"] == 200 and r["completion_tokens"] > 0 for r in answered), rows
    assert sims["sim-native"].stats()["by_kind"] == {"chat": 2, "responses": 1}
    assert sims["sim-bridge"].stats()["by_kind"] == {"chat": 1}


@pytest.mark.parametrize("status", [500, 404])
def test_one_bad_answer_does_not_bench_a_lone_replica(setup: Setup, sims: dict[str, SimProc], status: int) -> None:
    client = openai.OpenAI(base_url=f"{setup.gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    ask: dict[str, Any] = {"model": "sim-native", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    sims["sim-native"].set_faults(error_rate=1.0, error_status=status)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(**ask)
    assert failed.value.status_code == status
    sims["sim-native"].set_faults(error_rate=0.0)
    for _ in range(3):  # at once, not after a cooldown: 429 "in cooldown" would be the pitfall
        assert client.chat.completions.create(**ask).choices[0].message.content


# --- the launcher refuses rather than start a client that could go elsewhere ---

def test_launch_passes_the_environment_to_the_client(setup: Setup) -> None:
    done = ok(setup.user.confgen("launch", "claude", "--model", "sim-native", "--bin", "/usr/bin/env",
                                 isolate=False, ANTHROPIC_API_KEY="sk-ant-must-not-pass",
                                 CLAUDE_CODE_USE_BEDROCK="1"))
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert env["ANTHROPIC_BASE_URL"] == setup.gateway.url
    assert env["ANTHROPIC_AUTH_TOKEN"] == setup.user.key()
    for name in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
                 "ANTHROPIC_DEFAULT_HAIKU_MODEL"):
        assert env[name] == "sim-native"
    assert (env["CLAUDE_CODE_ATTRIBUTION_HEADER"], env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"],
            env["DISABLE_AUTOUPDATER"], env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) == ("0", "1", "1", "1024")
    assert "ANTHROPIC_API_KEY" not in env
    assert "CLAUDE_CODE_USE_BEDROCK" not in env
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    dry = ok(setup.user.confgen("launch", "claude", "--model", "sim-native", "--bin", "/usr/bin/env", "--dry-run",
                                isolate=False))
    assert "ANTHROPIC_AUTH_TOKEN=***\n" in dry.stdout
    assert setup.user.key() not in dry.stdout + dry.stderr
    codex = ok(setup.user.confgen("launch", "codex", "--model", "sim-bridge", "--bin", "/usr/bin/echo", "--",
                                  "exec", "hi", isolate=False))
    assert 'model_providers.confgen={name = "confgen gateway", base_url = "http://127.0.0.1:14300/v1", ' \
           'env_key = "CONFGEN_API_KEY", wire_api = "responses"' in codex.stdout
    assert codex.stdout.rstrip().endswith("exec hi")


@pytest.mark.parametrize(("args", "message"), [
    (["--base-url", "http://127.0.0.1:14349"], "the gateway is not reachable"),
    (["--key-file", "KEYFILE"], "the gateway refused it (HTTP 401"),
    (["--model", "not-served"], "does not serve it (it serves: sim-bridge, sim-native)"),
])
def test_launch_refuses_to_start(setup: Setup, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("sk-abcdefghijkl_" + "x" * 43 + "\n")
    args = [str(bad) if a == "KEYFILE" else a for a in args]
    model = [] if "--model" in args else ["--model", "sim-native"]
    done = setup.user.confgen("launch", "claude", *model, *args, "--bin", "/usr/bin/env", isolate=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stderr
    assert "ANTHROPIC_BASE_URL" not in done.stdout  # the client never started


def test_launch_without_the_client_installed(setup: Setup) -> None:
    done = setup.user.confgen("launch", "codex", "--model", "sim-native", isolate=False,
                              PATH=str(Path(sys.executable).parent))
    assert done.returncode == 3
    assert "codex: not found on PATH (npm install -g @openai/codex@0.169.0" in done.stderr


def test_the_master_key_is_handed_out_only_when_asked_for(setup: Setup) -> None:
    down = "postgresql://postgres@127.0.0.1:1/confgen"
    refused = setup.user.confgen("client", "openai", "--model", "sim-native", isolate=False, USER="nobody",
                                 DATABASE_URL=down)
    assert refused.returncode == 3, refused.stderr
    assert refused.stderr.startswith(f"error: DATABASE_URL={down}: the key store is unreachable")
    assert "pass --master-key" in refused.stderr
    assert "OPENAI_API_KEY" not in refused.stdout
    done = ok(setup.user.confgen("client", "openai", "--model", "sim-native", "--master-key", isolate=False,
                                 USER="nobody", DATABASE_URL=down))
    master = setup.user.project.secrets_dir / "LITELLM_MASTER_KEY"
    assert "using the master key (secrets/LITELLM_MASTER_KEY), as asked (--master-key)" in done.stderr
    assert f'export OPENAI_API_KEY="$(cat {master})"' in done.stdout
    assert MASTER_KEY not in done.stdout + done.stderr
