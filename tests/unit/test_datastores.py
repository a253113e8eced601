"""What ./runMe.sh tells the gateway about PostgreSQL and Redis, and what it says when they are down
(unreachable through socket paths that do not exist: no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from confgen.gateway.config import EdgeLimits, GatewayConfig
from confgen.runtime import datastores
from confgen.runtime.rundir import RunDir
from confgen.schema import Settings

NO_PG = "postgresql://postgres:pw@/confgen?host=/nonexistent-confgen-socket-dir"
NO_REDIS = "unix:///nonexistent-confgen-socket-dir/redis.sock"


def test_gateway_env_uses_our_names_never_database_url(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    env = datastores.gateway_env(Settings(LITELLM_REQUEST_TIMEOUT=120), run)
    assert env == {
        "CONFGEN_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/confgen",
        "CONFGEN_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CONFGEN_LEDGER_SPOOL": str(tmp_path / "run" / "spool"),
        "CONFGEN_KEYS_SNAPSHOT": str(tmp_path / "run" / "keys-snapshot.json"),
        "CONFGEN_KEY_CACHE_TTL": "5.0",
        "CONFGEN_KEY_STALE_MAX": "900.0",
        "CONFGEN_MAX_BODY_MB": "32.0",
        "CONFGEN_MAX_HEADER_KB": "32.0",
        "CONFGEN_BODY_TIMEOUT": "30.0",
        "CONFGEN_RELAY_LANE": "on",
        "CONFGEN_SLOT_TTL": "150.0",
    }
    config = GatewayConfig.from_env({**env, "LITELLM_MASTER_KEY": "m"})
    assert (config.database_url, config.redis_url, config.spool_dir, config.key_ttl_s, config.slot_ttl_s) == (
        "postgresql://postgres@127.0.0.1:5432/confgen", "redis://127.0.0.1:6379/0", tmp_path / "run" / "spool",
        5.0, 150.0)
    assert config.snapshot == tmp_path / "run" / "keys-snapshot.json"
    assert config.key_stale_max_s == 900.0
    assert config.edge == EdgeLimits()
    assert config.relay_lane is True


def test_vars_env_settings_reach_the_gateway(tmp_path: Path) -> None:
    settings = Settings(KEY_STALE_MAX=60, MAX_BODY_MB=1, MAX_HEADER_KB=8, BODY_TIMEOUT=5)
    config = GatewayConfig.from_env(datastores.gateway_env(settings, RunDir(tmp_path)))
    assert config.key_stale_max_s == 60
    assert config.edge == EdgeLimits(max_body_bytes=2**20, max_header_bytes=8192, body_timeout_s=5)


def test_spool_dir_setting_and_redis_off(tmp_path: Path) -> None:
    env = datastores.gateway_env(Settings(LEDGER_SPOOL_DIR="/var/spool/confgen", REDIS_URL="none"),
                                 RunDir(tmp_path))
    assert env["CONFGEN_LEDGER_SPOOL"] == "/var/spool/confgen"
    assert GatewayConfig.from_env(env).redis_url is None


def test_both_down_says_what_the_gateway_will_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunDir(tmp_path / "run")
    env = datastores.prepare(Settings(DATABASE_URL=NO_PG, REDIS_URL=NO_REDIS), run)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("warning: DATABASE_URL=postgresql://postgres:***@/confgen?host=/nonexistent-confgen-socket"
                          "-dir: PostgreSQL is not reachable: ")
    assert (f"  starting anyway: the master key works, API keys only if cached in {tmp_path}/run/keys-snapshot.json "
            f"(unknown keys get 503), and usage rows wait in {tmp_path}/run/spool until PostgreSQL is back\n") in err
    assert f"warning: Redis at {NO_REDIS} is not reachable (" in err
    assert "each gateway instance counts rate limits on its own until it is back" in err
    assert ":pw@" not in err  # the password never shows
    assert env["CONFGEN_DATABASE_URL"] == NO_PG


def test_redis_none_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datastores.prepare(Settings(DATABASE_URL=NO_PG, REDIS_URL="none"), RunDir(tmp_path))
    assert "rate limits: counted per gateway instance (REDIS_URL=none)\n" in capsys.readouterr().out
