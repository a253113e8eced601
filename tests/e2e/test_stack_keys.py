"""Keys and the ledger in the local stack: ./runMe.sh created the session's database, passed it to the
gateway as CONFGEN_DATABASE_URL (never DATABASE_URL), and a key made with the CLI works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.keys_support import confgen, create_key, poll, scalar

pytestmark = pytest.mark.e2e


def _gateway_environ(stack: Stack) -> dict[str, str]:
    state = json.loads((stack.run_dir / "state.json").read_text())
    pid = next(p["pid"] for p in state["procs"] if p["name"] == "litellm")
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_key_from_the_cli_works_through_the_stack(stack: Stack) -> None:
    url = stack.env["DATABASE_URL"]
    environ = _gateway_environ(stack)
    assert "DATABASE_URL" not in environ
    assert environ["CONFGEN_DATABASE_URL"] == url
    assert environ["CONFGEN_LEDGER_SPOOL"] == str(stack.run_dir / "spool")
    assert environ["CONFGEN_KEYS_SNAPSHOT"] == str(stack.run_dir / "keys-snapshot.json")
    log = (stack.run_dir / "logs" / "litellm.log").read_text(errors="replace")
    assert f"confgen: INFO keys and usage ledger in PostgreSQL at {url}" in log

    created = create_key(url, "--alias", "stack-user", "--models", "tiny-cpu")
    client = openai.OpenAI(base_url=f"{stack.base}/v1", api_key=created["key"], max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(model="tiny-cpu", max_tokens=4,
                                                           messages=[{"role": "user", "content": "Hello"}])
    reply = raw.parse()
    assert reply.usage is not None
    call_id = raw.headers["x-litellm-call-id"]
    poll(lambda: scalar(url, "SELECT count(*) FROM confgen_usage WHERE call_id = %s", (call_id,)) == 1, 15,
         what="the ledger row")
    assert scalar(url, "SELECT key_alias || ' ' || completion_tokens || ' ' || status FROM confgen_usage "
                       "WHERE call_id = %s", (call_id,)) == f"stack-user {reply.usage.completion_tokens} 200"
    assert created["key"] not in log
    report = json.loads(confgen("usage", "--json", database_url=url).stdout)
    assert any(r["group"] == f"stack-user ({created['prefix']})" and r["requests"] == 1 for r in report["rows"])
