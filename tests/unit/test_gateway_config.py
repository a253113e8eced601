"""confgen.gateway.config: the gateway's environment, read once at start; a bad value stops the start with a
message naming the variable, and the ledger spool never falls back to a shared folder such as /tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from confgen.errors import ConfgenError
from confgen.gateway.config import EdgeLimits, GatewayConfig, fallback_spool

SPOOL = {"CONFGEN_LEDGER_SPOOL": "/srv/spool"}


def test_defaults() -> None:
    config = GatewayConfig.from_env(SPOOL)
    assert (config.key_ttl_s, config.key_stale_max_s, config.slot_ttl_s, config.workers) == (5.0, 900.0, 630.0, 1)


@pytest.mark.parametrize(("raw", "seconds"), [("60", 60.0), ("2.5", 2.5), ("15m", 900.0), ("1h", 3600.0),
                                              ("0", 0.0), (" 30 ", 30.0), ("", 900.0)])
def test_stale_max_in_seconds_or_as_a_duration(raw: str, seconds: float) -> None:
    assert GatewayConfig.from_env({**SPOOL, "CONFGEN_KEY_STALE_MAX": raw}).key_stale_max_s == seconds


@pytest.mark.parametrize("raw", ["-1", "abc", "nan", "inf", "15 minutes"])
def test_a_bad_stale_max_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfgenError) as err:
        GatewayConfig.from_env({**SPOOL, "CONFGEN_KEY_STALE_MAX": raw})
    assert str(err.value) == (f"CONFGEN_KEY_STALE_MAX: expected a number of seconds (0 or more) or a duration like "
                              f"15m, got {raw!r} (fix it, or unset it for the default 900)")


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(ConfgenError) as err:
        GatewayConfig.from_env({**SPOOL, "CONFGEN_KEY_CACHE_TTL": "0", "CONFGEN_SLOT_TTL": "soon",
                                "NUM_WORKERS": "two"})
    assert [p.where for p in err.value.problems] == ["CONFGEN_KEY_CACHE_TTL", "CONFGEN_SLOT_TTL", "NUM_WORKERS"]
    assert err.value.problems[0].what == ("expected a number of seconds (more than 0) or a duration like 15m, "
                                          "got '0'")


@pytest.mark.parametrize("redis", ["none", "off", "", "NONE"])
def test_several_workers_without_redis_are_refused(redis: str) -> None:
    with pytest.raises(ConfgenError) as err:
        GatewayConfig.from_env({**SPOOL, "NUM_WORKERS": "4", "CONFGEN_REDIS_URL": redis})
    assert str(err.value) == (
        f"NUM_WORKERS=4 with CONFGEN_REDIS_URL={redis or '(empty)'}: each of the 4 workers would count rate limits, "
        "parallel slots and budgets on its own, so every key would get 4 times its limits (point CONFGEN_REDIS_URL "
        "at a Redis (vars.env: REDIS_URL), or run one worker (vars.env: LITELLM_NUM_WORKERS=1, litellm "
        "--num_workers 1))")


def test_several_workers_with_redis_or_one_without() -> None:
    assert GatewayConfig.from_env({**SPOOL, "NUM_WORKERS": "4"}).workers == 4  # the default Redis URL
    assert GatewayConfig.from_env({**SPOOL, "NUM_WORKERS": "1", "CONFGEN_REDIS_URL": "none"}).redis_url is None


def test_the_spool_falls_back_to_the_run_folder_then_the_state_folder(tmp_path: Path) -> None:
    assert fallback_spool({"CONFGEN_RUN_DIR": "/srv/run", "XDG_STATE_HOME": "/x"}) == Path("/srv/run/spool")
    assert fallback_spool({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/confgen/spool")
    assert fallback_spool({"HOME": "/h"}) == Path("/h/.local/state/confgen/spool")
    config = GatewayConfig.from_env({"CONFGEN_RUN_DIR": str(tmp_path)})
    assert config.spool_dir == tmp_path / "spool"


def test_no_spool_and_no_home_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    with pytest.raises(ConfgenError) as err:
        fallback_spool({})
    assert str(err.value) == ("CONFGEN_LEDGER_SPOOL: not set, and this user has no home folder for the spool (set it "
                              "to a folder only the gateway's user can write)")


def test_edge_limits_from_the_environment() -> None:
    assert GatewayConfig.from_env(SPOOL).edge == EdgeLimits()
    config = GatewayConfig.from_env({**SPOOL, "CONFGEN_MAX_BODY_MB": "0.5", "CONFGEN_MAX_HEADER_KB": "8",
                                     "CONFGEN_BODY_TIMEOUT": "1m"})
    assert config.edge == EdgeLimits(max_body_bytes=512 * 1024, max_header_bytes=8192, body_timeout_s=60.0)
    with pytest.raises(ConfgenError) as err:
        GatewayConfig.from_env({**SPOOL, "CONFGEN_MAX_BODY_MB": "lots", "CONFGEN_MAX_HEADER_KB": "0"})
    assert [str(p) for p in err.value.problems] == [
        "CONFGEN_MAX_BODY_MB: expected a number of MiB (more than 0), got 'lots' (fix it, or unset it for the "
        "default 32)",
        "CONFGEN_MAX_HEADER_KB: expected a number of KiB (more than 0), got '0' (fix it, or unset it for the "
        "default 32)"]
