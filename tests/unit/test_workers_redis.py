"""Several gateway workers without Redis would each count every limit on its own: refused wherever the
settings are read (`confgen check`, `render`, `up`, the gateway container) with the fix in the message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from confgen.errors import ConfgenError
from confgen.load import Project, load_vars

RunCli = Callable[..., Result]
REFUSAL = ("REDIS_URL: is 'none' (no Redis) but LITELLM_NUM_WORKERS=2: each of the 2 gateway workers would count "
           "rate limits, parallel slots and budgets on its own, so every key would get 2 times its limits; set "
           "REDIS_URL to a Redis (e.g. redis://127.0.0.1:6379/0) or LITELLM_NUM_WORKERS=1")


def test_check_refuses_several_workers_without_redis(run_cli: RunCli, project: Project) -> None:
    project.vars_env.write_text("LITELLM_NUM_WORKERS=2\nREDIS_URL=none\n")
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr == f"error: vars.env: {REFUSAL}\ncheck failed: 1 problem(s) in {project.root}\n"


def test_render_refuses_it_from_the_environment_too(run_cli: RunCli, project: Project, tmp_path: Path) -> None:
    result = run_cli("render", "--model", "tiny-cpu", "--out", str(tmp_path / "out"),
                     env={"LITELLM_NUM_WORKERS": "2", "REDIS_URL": "none"})
    assert result.exit_code == 1
    assert result.stderr == f"error: environment: {REFUSAL}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("workers", "redis"), [("1", "none"), ("4", "redis://127.0.0.1:6379/0"), ("4", None)])
def test_one_worker_or_a_redis_is_fine(project: Project, workers: str, redis: str | None) -> None:
    env = {"LITELLM_NUM_WORKERS": workers, **({"REDIS_URL": redis} if redis else {})}
    loaded = load_vars(project, env).settings.LITELLM_NUM_WORKERS
    assert loaded == int(workers)


def test_the_container_launch_refuses_it(project: Project) -> None:
    """The gateway container reads vars.env plus compose's CONFGEN_REDIS_URL (runtime/gateway_exec.py)."""
    from confgen.runtime.gateway_exec import store_settings

    with pytest.raises(ConfgenError, match="no Redis"):
        load_vars(project, store_settings({"LITELLM_NUM_WORKERS": "3", "CONFGEN_REDIS_URL": "off"}))
