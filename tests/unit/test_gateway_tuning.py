"""The LiteLLM proxy's launch settings (confgen.runtime.gateway_tuning, stack.gateway_launch)."""

from __future__ import annotations

import json
import logging.config
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confgen.runtime import gateway_tuning
from confgen.runtime.rundir import RunDir
from confgen.runtime.stack import gateway_launch
from confgen.schema import Settings

SECRETS = {"LITELLM_MASTER_KEY": "sk-test-0123456789abcdef", "VLLM_API_KEY": "vllm-test-0123456789"}


@pytest.fixture
def uvicorn_loggers() -> Iterator[None]:
    """dictConfig changes process-wide loggers: put uvicorn's back afterwards."""
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate


@pytest.mark.usefixtures("uvicorn_loggers")
def test_log_config_turns_only_the_access_log_off(tmp_path: Path) -> None:
    args = gateway_tuning.proxy_args(tmp_path)
    assert args == ["--log_config", str(tmp_path / "uvicorn-log.json")]
    config = json.loads((tmp_path / "uvicorn-log.json").read_text())
    logging.config.dictConfig(config)  # what uvicorn does with it
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()  # uvicorn then skips the access log, formatting included
    assert logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)  # start-up lines and errors stay
    assert logging.getLogger("uvicorn").handlers


@pytest.mark.parametrize(("workers", "multiproc"), [(1, False), (2, True)])
def test_metric_files_only_with_several_workers(tmp_path: Path, workers: int, multiproc: bool) -> None:
    run = RunDir(tmp_path / "run")
    run.make()
    stale = {"PROMETHEUS_MULTIPROC_DIR": "/elsewhere", "DATABASE_URL": "postgresql://x@127.0.0.1/y"}
    argv, env = gateway_launch(run, environ=stale, secrets=SECRETS, settings=Settings(LITELLM_NUM_WORKERS=workers))
    assert ("PROMETHEUS_MULTIPROC_DIR" in env) is multiproc
    if multiproc:
        assert Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
        assert env["PROMETHEUS_MULTIPROC_DIR"] != "/elsewhere"
    assert "DATABASE_URL" not in env
    assert env["TIMEOUT_WORKER_HEALTHCHECK"] == "60"
    assert env["KEEPALIVE_TIMEOUT"] == "75"
    assert argv[argv.index("--num_workers") + 1] == str(workers)
    assert argv[argv.index("--log_config") + 1] == str(run.generated / "uvicorn-log.json")


def test_idle_connections_outlive_the_clients_reuse() -> None:
    """The gateway must not close an idle connection while a client may still reuse it (issue 16's lost
    request): longer than httpx's (the OpenAI and Anthropic SDKs') and nginx's upstream keep-alive."""
    assert httpx.Limits().keepalive_expiry is not None
    assert max(httpx.Limits().keepalive_expiry, 60) < gateway_tuning.KEEPALIVE_S
