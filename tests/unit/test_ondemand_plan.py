"""deployments.yml on_demand: schema, the planner's budget check in `confgen check`, and the eviction order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from confgen.controller.evict import Resident, plan_eviction
from confgen.controller.plan import OnDemandPlan, load_plan
from confgen.load import Project
from tests.conftest import WriteModel

# A "GPU" profile for CPU models whose budget (2.7 GB) holds one tiny model (the planner: 2.0 GB each).
ONE_SLOT = "description: test host holding one tiny model\nmemory_gb: 3\nceiling: 0.9\n"


@pytest.fixture
def three(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]) -> Project:
    for index, name in enumerate(("tiny-a", "tiny-b", "tiny-c")):
        write_model(name, {**tiny_doc, "serve": {"port": 16210 + index}})
    (project.root / "gpus").mkdir()
    (project.root / "gpus" / "one-slot.yml").write_text(ONE_SLOT)
    return project


def _deploy(project: Project, models: dict[str, Any], **extra: Any) -> None:
    doc = {"on_demand": {"gpu": "one-slot", "models": models, **extra}}
    (project.root / "deployments.yml").write_text(yaml.safe_dump(doc))


def test_the_plan_uses_the_planners_shares(three: Project) -> None:
    _deploy(three, {"tiny-a": {"ttl": "15m", "preload": True}, "tiny-b": {"load_timeout_s": 90}})
    p = load_plan(three)
    assert p is not None
    assert p.swap == "stop"
    assert "no sleep mode" in p.swap_reason
    assert p.ceiling_pct == 90
    assert p.members["tiny-a"].share_pct == 67  # 2.0 GB of 3 GB, rounded up
    assert p.members["tiny-a"].settings.ttl == 900
    assert p.members["tiny-b"].settings.load_timeout_s == 90
    assert p.fits(["tiny-a"])
    assert not p.fits(["tiny-a", "tiny-b"])
    assert p.at_start == ["tiny-a"]


def test_no_section_or_disabled_means_no_plan(three: Project) -> None:
    assert load_plan(three) is None
    _deploy(three, {"tiny-a": {}}, enabled=False)
    assert load_plan(three) is None


def test_check_refuses_a_pinned_set_that_does_not_fit(three: Project, run_cli: Callable[..., Result]) -> None:
    _deploy(three, {"tiny-a": {"pin": True}, "tiny-b": {"preload": True}})
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert ("error: deployments.yml: on_demand.models: the pinned and preloaded models do not fit together: "
            "tiny-a 2.0 GB, tiny-b 2.0 GB; one-slot has 2.7 GB for vLLM (0.90 of 3) (drop pin or preload from "
            "some, or use a bigger GPU profile (confgen plan --gpu one-slot --model ... shows the table))"
            ) in result.stderr


def test_check_refuses_a_model_that_cannot_fit_beside_the_pinned(three: Project,
                                                                 run_cli: Callable[..., Result]) -> None:
    _deploy(three, {"tiny-a": {"pin": True}, "tiny-b": {}})
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert "on_demand.models.tiny-b: tiny-b does not fit beside the pinned models: tiny-b 2.0 GB, tiny-a 2.0 GB" \
        in result.stderr


def test_check_refuses_a_group_that_does_not_fit_alone(three: Project, run_cli: Callable[..., Result]) -> None:
    _deploy(three, {"tiny-a": {"group": "pair"}, "tiny-b": {"group": "pair"}})
    result = run_cli("check", "--no-vllm")
    assert "on_demand.models.tiny-a: group pair does not fit even alone: tiny-a 2.0 GB, tiny-b 2.0 GB" \
        in result.stderr


def test_check_accepts_models_that_fit_one_at_a_time(three: Project, run_cli: Callable[..., Result]) -> None:
    _deploy(three, {"tiny-a": {"preload": True}, "tiny-b": {}, "tiny-c": {}})
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("models", "expected"), [
    ({"tiny-x": {}}, "deployments.yml: on_demand.models.tiny-x: 'tiny-x' is not a model in models/"),
    ({"tiny-a": {"ttl": "soon"}}, "deployments.yml: on_demand.models.tiny-a.ttl: "),
    ({"tiny-a": {"pinned": True}}, "deployments.yml: on_demand.models.tiny-a.pinned: unknown key (did you mean 'pin'?"),
    ({"tiny-a": {"load_timeout_s": 0}}, "deployments.yml: on_demand.models.tiny-a.load_timeout_s: "),
    ({}, "deployments.yml: on_demand.models: "),
])
def test_bad_sections_say_where(three: Project, run_cli: Callable[..., Result], models: dict[str, Any],
                                expected: str) -> None:
    _deploy(three, models)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert f"error: {expected}" in result.stderr


def test_sleep_on_cpu_models_is_refused(three: Project, run_cli: Callable[..., Result]) -> None:
    _deploy(three, {"tiny-a": {}}, swap="sleep-1")
    result = run_cli("check", "--no-vllm")
    assert "on_demand.swap: sleep-1 on CPU models: the CPU build of vLLM has no sleep mode" in result.stderr


def _plan(three: Project, models: dict[str, Any], **changes: Any) -> OnDemandPlan:
    _deploy(three, models)
    p = load_plan(three)
    assert p is not None
    return replace(p, **changes)


def test_eviction_takes_the_least_recently_used_idle_model(three: Project) -> None:
    # Room for two (ceiling 140 of 200 pct): a third evicts the LRU idle one.
    p = _plan(three, {"tiny-a": {}, "tiny-b": {}, "tiny-c": {}}, ceiling_pct=140)
    residents = [Resident("tiny-a", False, False, 10), Resident("tiny-b", False, False, 300)]
    assert plan_eviction(p, ["tiny-c"], residents).actions == (("tiny-b", "stop"),)


def test_busy_and_pinned_models_are_not_evicted(three: Project) -> None:
    p = _plan(three, {"tiny-a": {"pin": True}, "tiny-b": {}, "tiny-c": {}}, ceiling_pct=140)
    residents = [Resident("tiny-a", False, False, 900), Resident("tiny-b", False, True, 300)]
    found = plan_eviction(p, ["tiny-c"], residents)
    assert (found.actions, found.fits, found.blocked_by) == ((), False, ("tiny-b",))
    pinned_only = plan_eviction(p, ["tiny-b", "tiny-c"], [Resident("tiny-a", False, False, 900)])
    assert (pinned_only.fits, pinned_only.blocked_by) == (False, ())


def test_sleep_first_then_stop(three: Project) -> None:
    p = _plan(three, {"tiny-a": {}, "tiny-b": {}}, swap="sleep-1")
    members = {n: replace(m, sleep_pct=10) for n, m in p.members.items()}
    p = replace(p, members=members)
    assert plan_eviction(p, ["tiny-b"], [Resident("tiny-a", False, False, 5)]).actions == (("tiny-a", "sleep"),)
    big_sleep = replace(p, members={n: replace(m, sleep_pct=30) for n, m in p.members.items()})
    assert plan_eviction(big_sleep, ["tiny-b"], [Resident("tiny-a", True, False, 5)]).actions == (("tiny-a", "stop"),)


def test_a_group_leaves_together(three: Project) -> None:
    p = _plan(three, {"tiny-a": {"group": "g"}, "tiny-b": {"group": "g"}, "tiny-c": {}}, ceiling_pct=140)
    residents = [Resident("tiny-a", False, False, 5), Resident("tiny-b", False, False, 500)]
    assert plan_eviction(p, ["tiny-c"], residents).actions == (("tiny-a", "stop"), ("tiny-b", "stop"))


def test_models_without_a_running_controller_says_what_to_do(run_cli: Callable[..., Result],
                                                             tmp_path: Path) -> None:
    result = run_cli("models", env={"CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 3
    assert result.stderr == ("error: confgen models: no on-demand controller is running (./runMe.sh starts one "
                             "when deployments.yml has an on_demand section)\n")


@pytest.mark.parametrize(("gpu", "swap", "reason"), [
    ("dgx-spark", "stop", "dgx-spark: unified memory (sleep level 1 frees nothing) and wake_up kills the engine"),
    ("h100-80gb", "sleep-1", "h100-80gb: a discrete GPU with host RAM to hold the weights of a sleeping model"),
])
def test_gpu_models_swap_the_profiles_way(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], *,
                                          gpu: str, swap: str, reason: str) -> None:
    write_model("gpu-x", {**tiny_doc, "info": {**tiny_doc["info"], "device": "gpu"}, "serve": {"port": 16240}})
    (project.root / "deployments.yml").write_text(yaml.safe_dump({"on_demand": {"gpu": gpu, "models": {"gpu-x": {}}}}))
    p = load_plan(project)
    assert p is not None
    assert p.swap == swap
    assert p.swap_reason.startswith(reason)
    assert (p.members["gpu-x"].sleep_pct > 0) == (swap != "stop")
