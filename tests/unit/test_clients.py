"""`confgen client` and the launcher's plan: what each client's configuration says, where --write puts it,
backups and merges, and that the key's value never appears unless asked (no services: --key-file)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from confgen.clients import claude_code, codex, launch
from confgen.clients.endpoint import ClientModel, Endpoint, KeyRef, normalise_base_url
from confgen.clients.userkey import default_alias
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.render import render_all
from tests.unit.test_render import selection_of

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-abcdefghijkl_" + "k" * 43
RunCli = Callable[..., Result]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "my.key"
    path.write_text(KEY + "\n")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def client(run_cli: RunCli, home: Path, key_file: Path, name: str, *args: str, **env: str) -> Result:
    return run_cli("client", name, "--model", "tiny-cpu", "--key-file", str(key_file), *args,
                   env={"HOME": str(home), "XDG_CONFIG_HOME": None, "CODEX_HOME": None, "CLAUDE_CONFIG_DIR": None,
                        "CONTINUE_GLOBAL_DIR": None, **env})


def section(output: str, title: str) -> str:
    """The text under `# --- title ---` up to the next section."""
    part = output.split(f"# --- {title} ---\n", 1)[1]
    return part.split("\n\n# ", 1)[0]  # the next section or the notes


@pytest.mark.parametrize("name", ["claude-code", "codex", "continue", "copilot", "cline", "openai"])
def test_the_key_is_referenced_never_printed(run_cli: RunCli, home: Path, key_file: Path, name: str) -> None:
    result = client(run_cli, home, key_file, name)
    assert result.exit_code == 0, result.output
    assert KEY not in result.output
    assert str(key_file) in result.output
    shown = client(run_cli, home, key_file, name, "--show-key")
    assert KEY in shown.stdout


def test_claude_code_settings(run_cli: RunCli, home: Path, key_file: Path) -> None:
    result = client(run_cli, home, key_file, "claude-code")
    doc = json.loads(section(result.stdout, f"{home}/.claude/settings.json"))
    assert doc == {"env": {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:4000", "ANTHROPIC_MODEL": "tiny-cpu",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "tiny-cpu", "ANTHROPIC_DEFAULT_SONNET_MODEL": "tiny-cpu",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "tiny-cpu", "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64", "API_TIMEOUT_MS": "120000",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1"}, "apiKeyHelper": f"cat {key_file}"}
    shell = section(result.stdout, "shell")
    assert f'export ANTHROPIC_AUTH_TOKEN="$(cat {key_file})"' in shell
    assert "unset ANTHROPIC_API_KEY" in shell
    assert "512-token context: below the 100k" in result.stdout


def test_codex_config_and_profiles(run_cli: RunCli, home: Path, key_file: Path, tiny_doc: dict[str, Any],
                                   write_model: Callable[..., Path]) -> None:
    tiny_doc["serve"] = {"port": 8001}
    tiny_doc["litellm"]["timeout"] = 900
    write_model("qwen2.5-small", tiny_doc)
    result = run_cli("client", "codex", "--model", "tiny-cpu", "--model", "qwen2.5-small", "--key-file",
                     str(key_file), env={"HOME": str(home), "CODEX_HOME": str(home / "cx")})
    assert result.exit_code == 0, result.output
    config = tomllib.loads(section(result.stdout, f"{home}/cx/config.toml"))
    assert config == {"model": "tiny-cpu", "model_provider": "confgen", "model_context_window": 512,
                      "check_for_update_on_startup": False, "analytics": {"enabled": False},
                      "model_providers": {"confgen": {
                          "name": "confgen gateway", "base_url": "http://127.0.0.1:4000/v1",
                          "env_key": "CONFGEN_API_KEY", "wire_api": "responses", "stream_idle_timeout_ms": 900000}}}
    profile = tomllib.loads(section(result.stdout, f"{home}/cx/qwen2.5-small.config.toml"))
    assert profile == {"model": "qwen2.5-small", "model_provider": "confgen", "model_context_window": 512}
    assert f'export CONFGEN_API_KEY="$(cat {key_file})"' in result.stdout


def test_continue_config(run_cli: RunCli, home: Path, key_file: Path) -> None:
    result = client(run_cli, home, key_file, "continue")
    doc = yaml.safe_load(section(result.stdout, f"{home}/.continue/config.yaml"))
    assert doc["models"] == [{
        "name": "tiny-cpu (gateway)", "provider": "openai", "model": "tiny-cpu", "apiBase": "http://127.0.0.1:4000/v1",
        "apiKey": "${{ secrets.CONFGEN_API_KEY }}", "roles": ["chat", "edit", "apply"], "capabilities": ["tool_use"],
        "defaultCompletionOptions": {"contextLength": 512, "maxTokens": 64}, "requestOptions": {"timeout": 120}}]


def test_copilot_custom_endpoint(run_cli: RunCli, home: Path, key_file: Path) -> None:
    result = client(run_cli, home, key_file, "copilot", XDG_CONFIG_HOME=str(home / "xdg"))
    doc = json.loads(section(result.stdout, f"{home}/xdg/Code/User/chatLanguageModels.json"))
    assert doc == [{"name": "confgen gateway", "vendor": "customendpoint", "apiKey": "${input:confgenGatewayKey}",
                    "apiType": "chat-completions", "models": [{
                        "id": "tiny-cpu", "name": "tiny-cpu (gateway)",
                        "url": "http://127.0.0.1:4000/v1/chat/completions", "toolCalling": True, "vision": False,
                        "streaming": True, "maxOutputTokens": 64, "maxInputTokens": 448}]}]


def test_cline_and_openai_print_settings_and_code(run_cli: RunCli, home: Path, key_file: Path) -> None:
    cline = json.loads(section(client(run_cli, home, key_file, "cline").stdout, "cline provider settings"))
    assert cline == {"apiProvider": "openai", "openAiBaseUrl": "http://127.0.0.1:4000/v1",
                     "openAiApiKey": f"<the key: cat {key_file}>", "openAiModelId": "tiny-cpu",
                     "openAiCustomModelInfo": {"maxTokens": 64, "supportsImages": False, "supportsPromptCache": False,
                                               "contextWindow": 512}}
    code = section(client(run_cli, home, key_file, "openai").stdout, "python")
    compile(code, "snippet", "exec")
    assert f"api_key=open({str(key_file)!r}).read().strip()" in code


@pytest.mark.parametrize("name", ["cline", "openai"])
def test_write_refuses_clients_without_a_file(run_cli: RunCli, home: Path, key_file: Path, name: str) -> None:
    result = client(run_cli, home, key_file, name, "--write")
    assert result.exit_code == 2
    assert f"error: confgen client {name} --write: " in result.stderr


def test_write_backs_up_and_merges_claude_settings(run_cli: RunCli, home: Path, key_file: Path) -> None:
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"model": "opus", "env": {"ANTHROPIC_API_KEY": "sk-ant-x", "KEEP": "1"}}))
    result = client(run_cli, home, key_file, "claude-code", "--write")
    assert result.exit_code == 0, result.output
    backups = list(settings.parent.glob("settings.json.bak-*"))
    assert [json.loads(b.read_text())["env"]["ANTHROPIC_API_KEY"] for b in backups] == ["sk-ant-x"]
    doc = json.loads(settings.read_text())
    assert doc["model"] == "opus"
    assert doc["env"]["KEEP"] == "1"
    assert "ANTHROPIC_API_KEY" not in doc["env"]
    assert doc["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"
    assert result.stdout.startswith(f"merged into {settings} (the old one is in {backups[0]})")
    again = client(run_cli, home, key_file, "claude-code", "--write")
    assert again.stdout.startswith(f"unchanged: {settings}")
    assert len(list(settings.parent.glob("settings.json.bak-*"))) == 1


def test_write_replaces_codex_config_keeping_a_backup(run_cli: RunCli, home: Path, key_file: Path) -> None:
    config = home / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text('model = "gpt-5"\n')
    result = client(run_cli, home, key_file, "codex", "--write")
    assert result.exit_code == 0, result.output
    assert tomllib.loads(config.read_text())["model_provider"] == "confgen"
    assert [b.read_text() for b in config.parent.glob("config.toml.bak-*")] == ['model = "gpt-5"\n']
    assert "then, in your shell: export CONFGEN_API_KEY=" in result.stdout


def test_write_merges_copilot_providers(run_cli: RunCli, home: Path, key_file: Path) -> None:
    path = home / ".config" / "Code" / "User" / "chatLanguageModels.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([{"name": "other", "vendor": "x"}, {"name": "confgen gateway", "old": True}]))
    assert client(run_cli, home, key_file, "copilot", "--write").exit_code == 0
    doc = json.loads(path.read_text())
    assert [p["name"] for p in doc] == ["other", "confgen gateway"]
    assert "old" not in doc[1]
    assert doc[1]["models"][0]["id"] == "tiny-cpu"


def test_write_refuses_a_broken_json_file(run_cli: RunCli, home: Path, key_file: Path) -> None:
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{not json")
    result = client(run_cli, home, key_file, "claude-code", "--write")
    assert result.exit_code == 1
    assert f"error: {settings}: is not valid JSON" in result.stderr
    assert settings.read_text() == "{not json"


def test_https_needs_a_ca_file_and_passes_it_on(run_cli: RunCli, home: Path, key_file: Path, tmp_path: Path) -> None:
    missing = client(run_cli, home, key_file, "claude-code", "--base-url", "https://gw.example:8443/v1/")
    assert missing.exit_code == 2
    assert "an https gateway needs the CA file" in missing.stderr
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = client(run_cli, home, key_file, "claude-code", "--base-url", "https://gw.example:8443/v1/",
                    "--ca-file", str(ca))
    env = json.loads(section(result.stdout, f"{home}/.claude/settings.json"))["env"]
    assert (env["ANTHROPIC_BASE_URL"], env["NODE_EXTRA_CA_CERTS"]) == ("https://gw.example:8443", str(ca))
    cont = yaml.safe_load(section(client(run_cli, home, key_file, "continue", "--base-url", "https://gw.example:8443",
                                         "--ca-file", str(ca)).stdout, f"{home}/.continue/config.yaml"))
    assert cont["models"][0]["requestOptions"]["caBundlePath"] == str(ca)


def test_no_model_and_no_running_stack(run_cli: RunCli, home: Path, key_file: Path, tmp_path: Path) -> None:
    result = run_cli("client", "codex", "--key-file", str(key_file),
                     env={"HOME": str(home), "CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 2
    assert result.stderr == ("error: --model: no model named and no stack running from this project (name one "
                             "with --model (`confgen list` shows the catalog))\n")


# No server behind this socket folder: the connection fails at once. Both password forms must stay hidden.
NO_STORE = "postgresql://postgres:s3cret@/confgen?host=/nonexistent-confgen-socket-dir&password=s3cret2"
MASTER = "sk-master-" + "m" * 32


def no_store_env(home: Path) -> dict[str, str | None]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": None, "DATABASE_URL": NO_STORE}


@pytest.mark.parametrize("argv", [("client", "openai"), ("launch", "codex", "--bin", "/bin/true", "--dry-run")])
def test_an_unreachable_key_store_is_an_error_not_the_master_key(
    run_cli: RunCli, home: Path, write_secret: Callable[[str, str], Path], argv: tuple[str, ...]
) -> None:
    write_secret("LITELLM_MASTER_KEY", MASTER)
    result = run_cli(*argv, "--model", "tiny-cpu", env=no_store_env(home))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: DATABASE_URL=postgresql://postgres:***@/confgen?host=/nonexistent-confgen-socket-dir&password=***: "
        "the key store is unreachable (PostgreSQL is not reachable: ")
    assert result.stderr.endswith(
        "(start PostgreSQL or point DATABASE_URL at a running server (you then get a key of your own), pass "
        "--key-file FILE, or pass --master-key to give the client the master key)\n")
    assert "s3cret" not in result.output
    assert "LITELLM_MASTER_KEY" not in result.output


def test_the_master_key_only_when_asked(run_cli: RunCli, home: Path, project: Project,
                                        write_secret: Callable[[str, str], Path]) -> None:
    write_secret("LITELLM_MASTER_KEY", MASTER)
    result = run_cli("client", "openai", "--model", "tiny-cpu", "--master-key", env=no_store_env(home))
    assert result.exit_code == 0, result.output
    assert result.stderr == ("warning: using the master key (secrets/LITELLM_MASTER_KEY), as asked (--master-key): "
                             "it may call every route, key administration too\n")
    assert f'export OPENAI_API_KEY="$(cat {project.secrets_dir / "LITELLM_MASTER_KEY"})"' in result.stdout
    assert MASTER not in result.output


def test_master_key_and_key_file_are_one_too_many(run_cli: RunCli, home: Path, key_file: Path) -> None:
    result = run_cli("client", "openai", "--model", "tiny-cpu", "--master-key", "--key-file", str(key_file),
                     env=no_store_env(home))
    assert result.exit_code == 2
    assert result.stderr == "error: --master-key: and --key-file name two keys (pass one of them)\n"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:4000", "http://127.0.0.1:4000"), ("http://h:1/v1/", "http://h:1"),
    ("https://gw.example/llm/v1", "https://gw.example/llm")])
def test_base_url_without_v1(url: str, expected: str) -> None:
    assert normalise_base_url(url) == expected


@pytest.mark.parametrize("url", ["gw.example:4000", "ftp://h/", "http://h/?x=1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ConfgenError) as caught:
        normalise_base_url(url)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("user", "alias"), [("ann", "ann-agents"), ("j.doe@corp", "j.doe-corp-agents"),
                                             ("@@", "user-agents")])
def test_default_alias(user: str, alias: str) -> None:
    assert default_alias({"USER": user}) == alias


def _endpoint(https: bool = False) -> Endpoint:
    models = (ClientModel("big", "", 200_000, 8192, 600), ClientModel("small", "", 32768, 4096, 60))
    return Endpoint("https://gw:8443" if https else "http://127.0.0.1:4000", KeyRef(Path("/k"), "a key"), models,
                    Path("/ca.crt") if https else None)


def test_claude_launch_environment() -> None:
    run = launch.plan("claude", _endpoint(https=True), KEY, {"ANTHROPIC_API_KEY": "sk-ant", "PATH": "/bin",
                                                              "CLAUDE_CODE_USE_VERTEX": "1", "NO_PROXY": "corp"},
                      binary="/bin/claude", args=["-p", "hi"])
    assert run.argv == ["/bin/claude", "-p", "hi"]
    env = run.env
    assert "ANTHROPIC_API_KEY" not in env
    assert "CLAUDE_CODE_USE_VERTEX" not in env
    assert (env["ANTHROPIC_AUTH_TOKEN"], env["ANTHROPIC_DEFAULT_HAIKU_MODEL"], env["ANTHROPIC_DEFAULT_OPUS_MODEL"],
            env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"], env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"],
            env["NODE_EXTRA_CA_CERTS"], env["API_TIMEOUT_MS"]) == (
        KEY, "small", "big", "4096", "200000", "/ca.crt", "600000")
    assert env["NO_PROXY"] == "corp,127.0.0.1,localhost,::1,gw"
    launch.check_env(run)
    assert "NODE_EXTRA_CA_CERTS" in run.required


def test_launch_refuses_a_missing_variable() -> None:
    run = launch.plan("claude", _endpoint(), "", {}, binary="/bin/claude", args=[])
    with pytest.raises(ConfgenError) as caught:
        launch.check_env(run)
    assert caught.value.exit_code == 3
    assert "not set: ANTHROPIC_AUTH_TOKEN;" in str(caught.value)


def test_codex_launch_overrides_are_toml() -> None:
    run = launch.plan("codex", _endpoint(https=True), KEY, {}, binary="/bin/codex", args=["exec", "hi"])
    assert run.argv[0] == "/bin/codex"
    assert run.argv[-2:] == ["exec", "hi"]
    pairs = run.argv[1:-2]
    assert pairs[::2] == ["-c"] * (len(pairs) // 2)
    parsed: dict[str, Any] = {}
    for item in pairs[1::2]:
        key, value = item.split("=", 1)
        parsed[key] = tomllib.loads(f"v = {value}")["v"]
    assert parsed == {"model": "big", "model_provider": "confgen", "model_context_window": 200000,
                      "check_for_update_on_startup": False, "analytics.enabled": False,
                      "model_providers.confgen": {"name": "confgen gateway", "base_url": "https://gw:8443/v1",
                                                  "env_key": "CONFGEN_API_KEY", "wire_api": "responses",
                                                  "stream_idle_timeout_ms": 600000}}
    assert (run.env["CONFGEN_API_KEY"], run.env[codex.CA_ENV]) == (KEY, "/ca.crt")
    launch.check_env(run)


def test_tested_versions_match_the_pinned_clients() -> None:
    pinned = json.loads((REPO / "clients" / "package.json").read_text())["dependencies"]
    assert {a.package: a.version for a in launch.AGENTS.values()} == {
        k: v for k, v in pinned.items() if k != "@continuedev/cli"}
    assert claude_code.NAME == "claude-code"


@pytest.mark.parametrize("case", [
    ({}, False, False),
    ({"messages_api": "passthrough"}, True, False),
    ({"responses_api": "translate"}, False, True),
])
def test_agent_api_settings_in_the_gateway_config(project: Project, tiny_doc: dict[str, Any],
                                                  write_model: Callable[..., Path],
                                                  case: tuple[dict[str, str], bool, bool]) -> None:
    settings, passthrough, bridged = case
    tiny_doc["litellm"].update(settings)
    write_model("tiny-cpu", tiny_doc)
    entry = yaml.safe_load(render_all(selection_of(project))["config.yaml"])["model_list"][0]
    assert ("/v1/messages" in entry["model_info"].get("supported_endpoints", [])) is passthrough
    assert (entry["litellm_params"].get("use_chat_completions_api") is True) is bridged


def test_agent_api_setting_rejects_other_values(run_cli: RunCli, tiny_doc: dict[str, Any],
                                                write_model: Callable[..., Path]) -> None:
    tiny_doc["litellm"]["messages_api"] = "vllm"
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check")
    assert result.exit_code == 1
    assert "litellm.messages_api" in result.stderr
    assert "'translate' or 'passthrough'" in result.stderr
