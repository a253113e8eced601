"""End-to-end fixtures: the real stack started by ./runMe.sh (CPU vLLM + LiteLLM), on loopback."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.skips import E2eTier

ROOT = Path(__file__).resolve().parents[2]
# Overridable so engineers can run the e2e tier side by side on one machine (CI uses the defaults).
GATEWAY_PORT = int(os.environ.get("E2E_LITELLM_PORT", "14000"))
VLLM_PORT = int(os.environ.get("E2E_VLLM_PORT", "18000"))
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432"


def pytest_configure(config: pytest.Config) -> None:
    """Every test here is e2e, and CI fails on a skip not listed in tests/e2e/skips.py."""
    config.pluginmanager.register(E2eTier(Path(__file__).parent), "confgen-e2e-tier")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What tests measured (`record_property("figures", ...)`), shown whether they passed or failed."""
    found = [f"{report.nodeid}: {value}" for status in ("passed", "failed")
             for report in terminalreporter.stats.get(status, []) if report.when == "call"
             for name, value in report.user_properties if name == "figures"]
    if found:
        terminalreporter.section("figures")
        for line in found:
            terminalreporter.write_line(line)


@dataclass(frozen=True)
class Stack:
    base: str
    key: str
    run_dir: Path
    env: dict[str, str]

    def runme(self, *args: str, extra_env: dict[str, str] | None = None,
              timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "runMe.sh"), *args], env={**self.env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("run")
    # Keys and ledger in a database of the session's own, which ./runMe.sh creates; dropped afterwards.
    scratch = f"confgen_test_{secrets.token_hex(4)}"
    env = {**os.environ, "CONFGEN_RUN_DIR": str(run_dir), "LITELLM_PORT": str(GATEWAY_PORT),
           "VLLM_PORT": str(VLLM_PORT),
           "MODEL": "tiny-cpu", "DATABASE_URL": f"{MACHINE_PG}/{scratch}", "CONFGEN_REDIS_PREFIX": f"{scratch}:"}
    env.pop("CONFGEN_ROOT", None)
    handle = Stack(f"http://127.0.0.1:{GATEWAY_PORT}", "", run_dir, env)
    started = handle.runme()
    try:
        assert started.returncode == 0, f"./runMe.sh failed:\n{started.stdout}\n{started.stderr}"
        key = (ROOT / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
        yield Stack(handle.base, key, run_dir, env)
    finally:
        handle.runme("stop", timeout=120)
        with psycopg.connect(f"{MACHINE_PG}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
