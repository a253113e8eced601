"""confgen.render.prometheus and `confgen prometheus`: the scrape config, local and Docker."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from click.testing import Result

from confgen.catalog import select
from confgen.load import Project
from confgen.render import prometheus

WriteModel = Callable[[str, Any], Path]
GATEWAY_RELABEL = [
    {"source_labels": ["model"], "regex": "None", "target_label": "model", "replacement": ""},
    *[rule for source in ("model_group", "requested_model", "litellm_model_name") for rule in (
        {"source_labels": ["model", source], "separator": ";", "regex": ";(.+)", "target_label": "model",
         "replacement": "$1"},
        {"source_labels": ["model"], "regex": "None", "target_label": "model", "replacement": ""},
    )],
    {"source_labels": ["model"], "regex": ".+", "target_label": "__tmp_model", "replacement": "other"},
    {"source_labels": ["model"], "regex": r"(tiny\-cpu)", "target_label": "__tmp_model", "replacement": "$1"},
    {"source_labels": ["__tmp_model"], "regex": "(.+)", "target_label": "model", "replacement": "$1"},
    {"regex": "__tmp_model", "action": "labeldrop"},
]


def rendered(project: Project, *names: str, docker: bool = False, env: dict[str, str] | None = None,
             ) -> dict[str, Any]:
    files = prometheus.render(select(project, list(names or ["tiny-cpu"]), env or {}), docker=docker)
    assert list(files) == ["prometheus.yml"]
    assert files["prometheus.yml"].startswith(prometheus.HEADER)
    doc: dict[str, Any] = yaml.safe_load(files["prometheus.yml"])
    return doc


def jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in doc["scrape_configs"]}


def b_model(tiny_doc: dict[str, Any]) -> dict[str, Any]:
    tiny_doc["serve"] = {"port": 8001, "served_name": "b"}
    return tiny_doc


def test_local_config_scrapes_the_gateway_and_vllm_on_loopback(project: Project) -> None:
    doc = rendered(project)
    secrets = project.secrets_dir
    assert doc == {
        "global": {"scrape_interval": "5s", "scrape_timeout": "4s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {"job_name": "gateway", "metrics_path": "/metrics/",
             "authorization": {"type": "Bearer", "credentials_file": str(secrets / "LITELLM_MASTER_KEY")},
             "static_configs": [{"targets": ["127.0.0.1:4000"]}],
             "metric_relabel_configs": GATEWAY_RELABEL},
            {"job_name": "vllm",
             "authorization": {"type": "Bearer", "credentials_file": str(secrets / "VLLM_API_KEY")},
             "static_configs": [{"targets": ["127.0.0.1:8000"], "labels": {"model": "tiny-cpu"}}]},
        ],
    }
    assert Path(doc["scrape_configs"][0]["authorization"]["credentials_file"]).is_absolute()


def test_every_model_is_a_vllm_target_with_its_served_name(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    write_model("b-model", b_model(tiny_doc))
    targets = jobs(rendered(project, "tiny-cpu", "b-model"))["vllm"]["static_configs"]
    assert targets == [{"targets": ["127.0.0.1:8000"], "labels": {"model": "tiny-cpu"}},
                       {"targets": ["127.0.0.1:8001"], "labels": {"model": "b"}}]


def test_a_wildcard_gateway_bind_is_scraped_on_loopback(project: Project) -> None:
    doc = rendered(project, env={"LITELLM_HOST": "0.0.0.0", "LITELLM_PORT": "4100"})
    assert jobs(doc)["gateway"]["static_configs"] == [{"targets": ["127.0.0.1:4100"]}]


def test_secret_values_are_never_written(project: Project, write_secret: Callable[[str, str], Path]) -> None:
    write_secret("LITELLM_MASTER_KEY", "sk-master-value-0123456789abcdef")
    write_secret("VLLM_API_KEY", "sk-vllm-value-0123456789abcdef")
    text = prometheus.render(select(project, ["tiny-cpu"], {}))["prometheus.yml"]
    assert "value-0123456789" not in text
    assert "credentials_file" in text


def test_docker_single_model_uses_the_compose_services(project: Project) -> None:
    doc = jobs(rendered(project, docker=True))
    assert list(doc) == ["gateway", "vllm", "node-exporter", "cadvisor", "dcgm-exporter"]
    assert doc["gateway"]["static_configs"] == [{"targets": ["gateway:4000"]}]
    assert doc["gateway"]["authorization"]["credentials_file"] == "/run/secrets/LITELLM_MASTER_KEY"
    assert doc["vllm"]["static_configs"] == [{"targets": ["vllm-node:8000"], "labels": {"model": "tiny-cpu"}}]
    assert doc["vllm"]["authorization"]["credentials_file"] == "/run/secrets/VLLM_API_KEY"
    assert doc["node-exporter"] == {"job_name": "node-exporter",
                                    "static_configs": [{"targets": ["node-exporter:9100"]}]}
    # One model: every GPU is its GPU.
    assert doc["dcgm-exporter"]["static_configs"] == [{"targets": ["dcgm-exporter:9400"],
                                                       "labels": {"model": "tiny-cpu"}}]
    assert doc["dcgm-exporter"]["metric_relabel_configs"] == [
        {"source_labels": ["modelName"], "regex": "(.+)", "target_label": "gpu_model", "replacement": "$1"},
        {"regex": "modelName", "action": "labeldrop"},
    ]


def test_docker_several_models_use_one_service_each(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    write_model("b-model", b_model(tiny_doc))
    doc = jobs(rendered(project, "tiny-cpu", "b-model", docker=True))
    assert doc["vllm"]["static_configs"] == [{"targets": ["vllm-tiny-cpu:8000"], "labels": {"model": "tiny-cpu"}},
                                             {"targets": ["vllm-b-model:8001"], "labels": {"model": "b"}}]
    # Models share GPUs: GPU series carry no model.
    assert doc["dcgm-exporter"]["static_configs"] == [{"targets": ["dcgm-exporter:9400"]}]


def test_docker_follows_vllm_api_host(project: Project) -> None:
    doc = jobs(rendered(project, docker=True, env={"VLLM_API_HOST": "vllm-node"}))
    assert doc["vllm"]["static_configs"][0]["targets"] == ["vllm-node:8000"]


def test_cadvisor_containers_get_their_model(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    def model_of(rules: list[dict[str, Any]], container: str) -> str | None:
        # Prometheus anchors relabel regexes; these use only syntax RE2 and Python share.
        found = [r["replacement"] for r in rules if re.fullmatch(r["regex"], container)]
        assert len(found) <= 1
        return found[0] if found else None

    single = jobs(rendered(project, docker=True))["cadvisor"]["metric_relabel_configs"]
    assert model_of(single, "confgen-vllm-node-1") == "tiny-cpu"
    assert model_of(single, "confgen-gateway-1") is None
    write_model("b-model", b_model(tiny_doc))
    several = jobs(rendered(project, "tiny-cpu", "b-model", docker=True))["cadvisor"]["metric_relabel_configs"]
    assert model_of(several, "confgen-vllm-tiny-cpu-1") == "tiny-cpu"
    assert model_of(several, "confgen_vllm-b-model_1") == "b"
    assert model_of(several, "confgen-prometheus-1") is None


def test_cli_writes_prometheus_yml(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("prometheus", "--model", "tiny-cpu", "--out", str(out))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == f"wrote {out / 'prometheus.yml'}\n"
    assert sorted(p.name for p in out.iterdir()) == ["prometheus.yml"]


def test_cli_docker_prepares_what_compose_mounts(
    run_cli: Callable[..., Result], project: Project, tmp_path: Path
) -> None:
    out = tmp_path / "monitoring"
    result = run_cli("prometheus", "--model", "tiny-cpu", "--docker", "--out", str(out))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (f"wrote {out / 'prometheus.yml'}\ncreated {out / 'prometheus-data'}\n"
                             f"created {out / 'grafana-data'}\ncreated secrets/GRAFANA_ADMIN_PASSWORD (mode 0600)\n")
    password = project.secrets_dir / "GRAFANA_ADMIN_PASSWORD"
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert len(password.read_text().strip()) >= 32
    again = run_cli("prometheus", "--model", "tiny-cpu", "--docker", "--out", str(out))
    assert again.stdout == f"wrote {out / 'prometheus.yml'}\n"


def test_cli_unknown_model(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("prometheus", "--model", "nope", "--out", str(out))
    assert result.exit_code == 1
    assert result.stderr == "error: --model: unknown model 'nope' (known models: tiny-cpu)\n"
    assert not out.exists()


def test_only_served_models_keep_their_name_on_gateway_series(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any]
) -> None:
    tiny_doc["serve"] = {"port": 8001, "served_name": "qwen2.5-1.5b"}
    write_model("b-model", tiny_doc)
    rules = jobs(rendered(project, "tiny-cpu", "b-model"))["gateway"]["metric_relabel_configs"]
    known = next(r for r in rules if r.get("replacement") == "$1" and r.get("target_label") == "__tmp_model")

    def model_label(name: str) -> str:
        return name if re.fullmatch(known["regex"], name) else "other"

    assert [model_label(n) for n in ("tiny-cpu", "qwen2.5-1.5b", "qwen2x5-1.5b", "no-such-model", "tiny-cpu2")] == [
        "tiny-cpu", "qwen2.5-1.5b", "other", "other", "other"]
