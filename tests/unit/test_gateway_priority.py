"""Priorities (issue 17): a key's priority reaches vLLM's request `priority` on priority-scheduled models only
(confgen/gateway/priority.py), orders the controller's queue of loads, and is a key column with a bound."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from starlette.requests import Request

from confgen.catalog import select
from confgen.controller.core import Controller
from confgen.controller.plan import Member, OnDemandPlan
from confgen.gateway import priority
from confgen.keys import migrations
from confgen.keys.record import KeyRecord
from confgen.keys.store import NewKey
from confgen.load import Project
from confgen.plan import Gpu, GpuProfile
from confgen.render import render_all
from confgen.routing.schema import OnDemandModel
from confgen.runtime.runner import ServerSpec

SCHEDULED = [{"model_name": "big", "model_info": {priority.MARK: True},
              "litellm_params": {"extra_body": {"top_k": 20}}}, {"model_name": "small", "model_info": {}}]


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority.proxyinfo, "router", lambda: SimpleNamespace(model_list=SCHEDULED))


def _request(body: dict[str, Any], **scope: Any) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
                    "parsed_body": (tuple(body), body), **scope})


def test_the_keys_priority_replaces_the_clients_on_a_scheduled_model(router: None) -> None:
    """The relay lane's request (authenticated before routing): priority at the top, as the lane sends it."""
    request = _request({"model": "big", "priority": -100})
    assert priority.apply(request, "/v1/chat/completions", "big", 5)
    keys, body = request.scope["parsed_body"]
    assert body == {"model": "big", "priority": 5}
    # LiteLLM reads the body through the key tuple (http_parsing_utils._safe_get_request_parsed_body).
    assert {k: body[k] for k in keys} == {"model": "big", "priority": 5}


def test_on_litellms_path_it_goes_in_extra_body_with_the_models_own(router: None) -> None:
    """LiteLLM's Router would take a top-level priority for its own scheduler (litellm/router.py)."""
    request = _request({"model": "big", "priority": -100, "extra_body": {"min_p": 0.1}}, endpoint=object())
    assert priority.apply(request, "/v1/chat/completions", "big", 5)
    keys, body = request.scope["parsed_body"]
    assert {k: body[k] for k in keys} == {"model": "big", "extra_body": {"top_k": 20, "min_p": 0.1, "priority": 5}}


def test_the_master_key_keeps_the_priority_it_sent(router: None) -> None:
    request = _request({"model": "big", "priority": 3}, endpoint=object())
    assert priority.apply(request, "/v1/chat/completions", "big", None, keep_sent=True)
    assert request.scope["parsed_body"][1] == {"model": "big", "extra_body": {"top_k": 20, "priority": 3}}


def test_a_key_without_priority_sends_vllms_default(router: None) -> None:
    request = _request({"model": "big"})
    assert priority.apply(request, "/openai/deployments/{model}/chat/completions", "big", None)
    assert request.scope["parsed_body"] == (("model", "priority"), {"model": "big", "priority": 0})


@pytest.mark.parametrize(("route", "model"), [("/v1/chat/completions", "small"), ("/v1/embeddings", "big"),
                                              ("/v1/messages", "big"), ("/v1/chat/completions", None)])
def test_other_models_and_routes_are_left_alone(router: None, route: str, model: str | None) -> None:
    request = _request({"model": model})
    assert not priority.apply(request, route, model, 5)
    assert request.scope["parsed_body"] == (("model",), {"model": model})


def test_the_template_marks_models_run_with_priority_scheduling(project: Project, write_model: Any,
                                                                 tiny_doc: dict[str, Any]) -> None:
    tiny_doc["command"] = tiny_doc["command"].rstrip() + " \\\n  --scheduling-policy priority\n"
    write_model("tiny-cpu", tiny_doc)
    config = yaml.safe_load(render_all(select(project, ["tiny-cpu"], {}))["config.yaml"])
    assert config["model_list"][0]["model_info"][priority.MARK] is True
    assert list(priority.scheduled_models(config["model_list"])) == ["tiny-cpu"]


def test_without_the_flag_no_mark(project: Project) -> None:
    config = yaml.safe_load(render_all(select(project, ["tiny-cpu"], {}))["config.yaml"])
    assert priority.MARK not in config["model_list"][0]["model_info"]


def test_priority_is_bounded_and_kept_with_the_key() -> None:
    assert NewKey("a", priority=1001).problems() == [
        "--priority: expected an integer from -1000 to 1000 (lower is served first), got 1001"]
    assert NewKey("a", priority=-1000).problems() == []
    assert migrations.MIGRATIONS[-1][0] == "004_api_keys_priority"
    from datetime import UTC, datetime

    record = KeyRecord(prefix="abcdefghijkl", key_hash="0" * 64, alias="a", created_at=datetime.now(UTC), priority=-3)
    assert KeyRecord.from_json(record.to_json()) == record
    old = record.to_json()
    del old["priority"]  # a snapshot written before the column
    assert KeyRecord.from_json(old).priority is None


def _controller() -> Controller:
    gpu = Gpu("t", GpuProfile(description="t", memory_gb=100, ceiling=1.0, swap="stop"), "t")
    members = {n: Member(n, n, "gpu", 30, 0, 30.0, 0.0, OnDemandModel()) for n in "abcd"}
    specs = {n: ServerSpec(n, [], {}, Path(), Path("/dev/null"), "http://127.0.0.1:1") for n in "abcd"}
    return Controller(OnDemandPlan(gpu, "stop", "t", 1.0, 0, 100, members), specs)


def test_the_controller_loads_the_best_priority_next_then_the_first_asked() -> None:
    ctl = _controller()
    order: list[str] = []

    async def load(name: str) -> None:
        order.append(name)
        await asyncio.sleep(0.05)
        ctl.slots[name].state = "ready"

    ctl._make_ready = load  # type: ignore[method-assign]

    async def scenario() -> list[dict[str, Any]]:
        worker = asyncio.create_task(ctl._worker())
        first = asyncio.create_task(ctl.ensure_ready("a", 5))  # loading while the others queue
        await asyncio.sleep(0.01)
        waits = [asyncio.create_task(ctl.ensure_ready(n, 5, p)) for n, p in (("b", 10), ("c", 10), ("d", -5))]
        await asyncio.sleep(0.01)
        waits.append(asyncio.create_task(ctl.ensure_ready("c", 5, -5)))  # c now ties d, and c was asked first
        await asyncio.sleep(0.01)
        queue: list[dict[str, Any]] = ctl.status()["queue"]
        await asyncio.gather(first, *waits)
        worker.cancel()
        await ctl._http.aclose()
        return queue

    queue = asyncio.run(scenario())
    assert queue == [{"model": "c", "priority": -5, "waiting": 2}, {"model": "d", "priority": -5, "waiting": 1},
                     {"model": "b", "priority": 10, "waiting": 1}]
    assert order == ["a", "c", "d", "b"]  # b was asked before d, but d's priority is better
