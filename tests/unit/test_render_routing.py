"""deployments.yml -> the LiteLLM config: replicas, weights, timeouts, cooldowns, retries, fallbacks, health
probes and Redis for several gateways; and the errors a bad file gets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from confgen.catalog import select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.render import render_all
from confgen.routing.plan import plan_routes
from confgen.routing.status import parse_health, report

REPO = Path(__file__).resolve().parents[2]
WriteModel = Callable[[str, Any], Path]


def config_of(project: Project, *names: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(render_all(select(project, list(names), {}))["config.yaml"])
    return doc


def write_deployments(project: Project, doc: dict[str, Any] | str) -> None:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    (project.root / "deployments.yml").write_text(text, encoding="utf-8")


@pytest.fixture
def two_models(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]) -> Project:
    """tiny-cpu plus `small` (served as small-model, port 8001)."""
    tiny_doc["serve"] = {"port": 8001, "served_name": "small-model"}
    write_model("small", tiny_doc)
    return project


def entries(config: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in config["model_list"] if e["model_name"] == name]


def test_without_deployments_every_model_is_a_lone_replica(project: Project) -> None:
    config = config_of(project, "tiny-cpu")
    (entry,) = config["model_list"]
    assert entry["litellm_params"]["api_base"] == "http://127.0.0.1:8000/v1"
    assert "weight" not in entry["litellm_params"]
    # Nothing can take over: never benched, the stream waits its full request timeout, no timeout retries.
    assert entry["litellm_params"]["stream_timeout"] == entry["litellm_params"]["timeout"] == 120.0
    assert (entry["model_info"]["cooldown_time"], entry["model_info"]["allowed_fails"]) == (0.0, 1)
    assert config["router_settings"] == {
        "routing_strategy": "simple-shuffle", "num_retries": 2, "allowed_fails": 1, "cooldown_time": 30,
        "model_group_retry_policy": {"tiny-cpu": {"TimeoutErrorRetries": 0}}}
    assert "background_health_checks" not in config["general_settings"]
    assert "disable_cooldowns" not in config["router_settings"]


def test_replicas_share_the_model_name_with_weights_and_routing_settings(two_models: Project) -> None:
    write_deployments(two_models, {
        "routing": {"strategy": "least-busy", "retries": 3, "stream_idle_s": 90, "allowed_fails": 0,
                    "cooldown_s": 20, "health_interval_s": 10, "health_timeout_s": 15},
        "models": {"tiny-cpu": {"replicas": [{"api_base": "http://gpu-a.lan:8000/v1", "weight": 2},
                                             {"api_base": "https://gpu-b.lan/v1"}],
                                "fallbacks": ["small"], "cooldown_s": 45}}})
    config = config_of(two_models, "tiny-cpu", "small")
    tiny = entries(config, "tiny-cpu")
    assert [(e["litellm_params"]["api_base"], e["litellm_params"]["weight"]) for e in tiny] == [
        ("http://gpu-a.lan:8000/v1", 2), ("https://gpu-b.lan/v1", 1)]
    for e in tiny:
        assert e["litellm_params"]["model"] == "hosted_vllm/tiny-cpu"
        assert e["litellm_params"]["timeout"] == 120.0  # a whole answer: the model file's litellm.timeout
        assert e["litellm_params"]["stream_timeout"] == 90  # the longest silence of a stream
        assert {k: e["model_info"][k] for k in ("allowed_fails", "cooldown_time", "health_check_timeout",
                                                "health_check_max_tokens")} == {
            "allowed_fails": 0, "cooldown_time": 45, "health_check_timeout": 15, "health_check_max_tokens": 1}
    (small,) = entries(config, "small-model")
    assert small["litellm_params"]["api_base"] == "http://127.0.0.1:8001/v1"  # not listed: its own vLLM
    assert small["model_info"]["cooldown_time"] == 0.0  # lone: the end of the chain is never benched
    assert config["router_settings"] == {
        "routing_strategy": "least-busy", "num_retries": 3, "allowed_fails": 0, "cooldown_time": 20,
        "model_group_retry_policy": {"small-model": {"TimeoutErrorRetries": 0}},
        "fallbacks": [{"tiny-cpu": ["small-model"]}]}  # served names, which clients and LiteLLM use
    general = config["general_settings"]
    assert (general["background_health_checks"], general["health_check_interval"],
            general["enable_health_check_routing"], general["health_check_staleness_threshold"]) == (True, 10, True, 30)


def test_one_replica_with_a_fallback_can_be_benched(two_models: Project) -> None:
    write_deployments(two_models, {"models": {"tiny-cpu": {"replicas": [{"api_base": "http://a:1/v1"}],
                                                           "fallbacks": ["small"]}}})
    (tiny,) = entries(config_of(two_models, "tiny-cpu", "small"), "tiny-cpu")
    assert (tiny["model_info"]["cooldown_time"], tiny["litellm_params"]["stream_timeout"]) == (30, 120)
    assert "weight" not in tiny["litellm_params"]


def test_a_fallback_outside_the_selection_is_left_out_and_said_so(two_models: Project) -> None:
    write_deployments(two_models, {"models": {"tiny-cpu": {"replicas": [{"api_base": "http://a:1/v1"}],
                                                           "fallbacks": ["small"]}}})
    text = render_all(select(two_models, ["tiny-cpu"], {}))["config.yaml"]
    assert "# tiny-cpu: fallbacks not in this selection, left out: small" in text
    config = yaml.safe_load(text)
    assert "fallbacks" not in config["router_settings"]
    assert config["model_list"][0]["model_info"]["cooldown_time"] == 0.0  # lone again


def test_several_gateway_instances_share_state_in_redis(project: Project) -> None:
    write_deployments(project, {"gateway": {"instances": 3, "redis_namespace": "site-a"}})
    router = config_of(project, "tiny-cpu")["router_settings"]
    assert router["redis_url"] == "os.environ/CONFGEN_REDIS_URL"  # the URL (and its password) stays out
    assert router["cache_kwargs"] == {"namespace": "site-a"}


def test_several_gateways_without_redis_is_an_error(project: Project, write_vars: Callable[[str], Path]) -> None:
    write_vars("REDIS_URL=none\n")
    write_deployments(project, {"gateway": {"instances": 2}})
    with pytest.raises(ConfgenError) as info:
        render_all(select(project, ["tiny-cpu"], {}))
    assert str(info.value) == ("deployments.yml: gateway.instances: 2 gateways need Redis to share cooldowns and "
                               "limits, but REDIS_URL is none (set REDIS_URL in vars.env, or use one instance)")


def test_one_gateway_needs_no_redis(project: Project) -> None:
    write_deployments(project, {"gateway": {"instances": 1}})
    assert "redis_url" not in config_of(project, "tiny-cpu")["router_settings"]


def test_an_empty_file_is_the_defaults(project: Project) -> None:
    write_deployments(project, "# nothing yet\n")
    plan = plan_routes(select(project, ["tiny-cpu"], {}))
    assert plan.source == "deployments.yml"
    assert plan.models["tiny-cpu"].lone


def test_the_example_file_is_valid_for_the_catalog(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "models", root / "models")
    for name in ("vars.env", "litellm_config.template.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copy(REPO / "deployments.example.yml", root / "deployments.yml")
    config = config_of(Project(root), "qwen3-coder-30b", "gpt-oss-20b")
    assert len(entries(config, "qwen3-coder-30b")) == 2
    assert config["router_settings"]["fallbacks"] == [{"qwen3-coder-30b": ["gpt-oss-20b"]}]


BAD = [
    ("routing:\n  stratgy: least-busy\n",
     "deployments.yml: routing.stratgy: unknown key (did you mean 'strategy'? allowed: allowed_fails, cooldown_s, "
     "health_interval_s, health_timeout_s, retries, strategy, stream_idle_s)"),
    ("routing: {strategy: round-robin}\n",
     "deployments.yml: routing.strategy: Input should be 'simple-shuffle', 'least-busy', 'latency-based-routing' or "
     "'usage-based-routing-v2', got 'round-robin'"),
    ("models:\n  tiny-cpu:\n    replicas:\n      - {api_base: 'http://a:1/v1', weigth: 2}\n",
     "deployments.yml: models.tiny-cpu.replicas.0.weigth: unknown key (did you mean 'weight'? allowed: api_base, "
     "weight)"),
    ("models:\n  tiny-cpu:\n    replicas: [{api_base: 'http://user:pw@a:1/v1'}]\n",
     "deployments.yml: models.tiny-cpu.replicas.0.api_base: not a base URL: 'http://user:pw@a:1/v1' (write it as "
     "http://host:port/v1, without a user or password)"),
    ("models:\n  tiny-cpu:\n    replicas: []\n",
     "deployments.yml: models.tiny-cpu.replicas: List should have at least 1 item after validation, not 0"),
    ("models:\n  tiny-cpu:\n    fallbacks: [small]\n",
     "deployments.yml: models.tiny-cpu.replicas: required key is missing (add it)"),
    ("models:\n  tiny-cpux:\n    replicas: [{api_base: 'http://a:1/v1'}]\n",
     "deployments.yml: models.tiny-cpux: 'tiny-cpux' is not a model in models/ (did you mean 'tiny-cpu'? known: "
     "small, tiny-cpu)"),
    ("models:\n  tiny-cpu:\n    replicas: [{api_base: 'http://a:1/v1'}]\n    fallbacks: [tiny-cpu]\n",
     "deployments.yml: models.tiny-cpu.fallbacks.0: tiny-cpu falls back to itself (name another model)"),
    ("models:\n  tiny-cpu:\n    replicas: [{api_base: 'http://a:1/v1'}, {api_base: 'http://a:1/v1/'}]\n",
     "deployments.yml: models.tiny-cpu.replicas.1.api_base: http://a:1/v1/ is listed twice (list each replica once)"),
    ("models:\n  tiny-cpu:\n    replicas: [{api_base: 'http://a:1/v1'}]\n"
     "  small:\n    replicas: [{api_base: 'http://a:1/v1'}]\n",
     "deployments.yml: models.small.replicas.0.api_base: http://a:1/v1 is also a replica of tiny-cpu (each vLLM "
     "serves one model: give it its own host:port)"),
    ("models:\n  tiny-cpu:\n    replicas: [{api_base: 'http://a:1/v1'}]\n    fallbacks: [small]\n"
     "  small:\n    replicas: [{api_base: 'http://b:1/v1'}]\n    fallbacks: [tiny-cpu]\n",
     "deployments.yml: models.small.fallbacks: fallbacks loop: small -> tiny-cpu -> small (a chain of fallbacks "
     "must end at a model without fallbacks)"),
    ("gateway: {instances: 0}\n",
     "deployments.yml: gateway.instances: Input should be greater than or equal to 1, got 0"),
    ("models: [tiny-cpu]\n", "deployments.yml: models: Input should be a valid dictionary"),
    ("- tiny-cpu\n", "deployments.yml: expected a mapping with routing, gateway and models, got list "
                     "(see deployments.example.yml)"),
    ("routing: {retries: 2\n",
     "deployments.yml: YAML syntax error at line 2, column 1: expected ',' or '}', but got '<stream end>' "
     "(fix the YAML)"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_deployments_say_where_what_and_how(two_models: Project, text: str, message: str) -> None:
    write_deployments(two_models, text)
    with pytest.raises(ConfgenError) as info:
        render_all(select(two_models, ["tiny-cpu"], {}))
    assert str(info.value) == message


def test_check_summarises_the_deployments_file(two_models: Project, run_cli: Callable[..., Any]) -> None:
    write_deployments(two_models, {"gateway": {"instances": 2}, "models": {
        "tiny-cpu": {"replicas": [{"api_base": "http://a:1/v1"}, {"api_base": "http://b:1/v1"}],
                     "fallbacks": ["small"]}}})
    result = run_cli("check", "--no-vllm")
    assert ("note: routing (deployments.yml): 1 of 2 models on several replicas (2 replicas), fallbacks: "
            "tiny-cpu -> small-model, 2 gateway instances sharing state in Redis\n") in result.stdout


def test_check_reports_the_deployments_file(two_models: Project, run_cli: Callable[..., Any]) -> None:
    write_deployments(two_models, "models:\n  nope:\n    replicas: [{api_base: 'http://a:1/v1'}]\n")
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert "error: deployments.yml: models.nope: 'nope' is not a model in models/" in result.stderr


HEALTH = {
    "healthy_endpoints": [{"api_base": "http://b:1/v1", "model": "hosted_vllm/big", "model_id": "2"},
                          {"api_base": "http://s:1/v1", "model": "hosted_vllm/small", "model_id": "3"}],
    "unhealthy_endpoints": [{"api_base": "http://a:1/v1", "model": "hosted_vllm/big", "model_id": "1",
                             "error": "litellm.InternalServerError: Cannot connect to host a:1\nstack trace: ..."}],
}


def test_health_is_one_line_per_deployment() -> None:
    assert report(parse_health(HEALTH)) == [
        "deployments: 2 healthy, 1 unhealthy",
        "  big                      http://a:1/v1                            UNHEALTHY: Cannot connect to host a:1",
        "  big                      http://b:1/v1                            healthy",
        "  small                    http://s:1/v1                            healthy",
    ]
    assert report([]) == ["  no deployment checked yet (the first background probe runs shortly after start)"]
