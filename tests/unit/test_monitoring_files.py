"""monitoring/ (Grafana provisioning, dashboards, the exporter allow-list), docker-compose.monitoring.yml,
the PromQL reader in confgen.dashboards, and the local Prometheus switch's refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from confgen import dashboards
from confgen.errors import ConfgenError
from confgen.runtime import host as host_mod
from confgen.runtime import monitoring

REPO = Path(__file__).resolve().parents[2]
BOARDS = sorted((REPO / dashboards.DASHBOARDS).glob("*.json"))
COMPOSE = REPO / "docker-compose.monitoring.yml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (model) (rate(litellm_proxy_total_requests_metric_total{model=~"$model"}[$__rate_interval]))',
     {"litellm_proxy_total_requests_metric_total"}),
    ("histogram_quantile(0.95, sum by (le, model) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
     {"vllm:time_to_first_token_seconds_bucket"}),
    ('sum(rate(a_total{result="hit"}[1m])) / sum(rate(a_total[1m])) > bool 1e-3 and on(gpu) group_left b',
     {"a_total", "b"}),
    ("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes offset 5m",
     {"node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"}),
    ('max by (model) (x{model=~"${model:regex}", reason="rate(y)"})', {"x"}),
    ("label_values(vllm:num_requests_running, model)", {"vllm:num_requests_running"}),
])
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert dashboards.metric_names(expr) == names


def test_grafana_variables_are_filled() -> None:
    expr = 'rate(x{model=~"$model", key=~"${key}"}[$__rate_interval])'
    assert dashboards.substitute(expr) == 'rate(x{model=~".*", key=~".*"}[1m])'
    filled = dashboards.substitute(expr, {"__rate_interval": "30s", "model": "a"})
    assert filled == 'rate(x{model=~"a", key=~".*"}[30s])'


def test_two_dashboards_with_unique_uids_on_the_provisioned_datasource() -> None:
    assert [p.name for p in BOARDS] == ["gpu-host.json", "overview.json"]
    boards = [dashboards.load(p) for p in BOARDS]
    assert len({b["uid"] for b in boards}) == 2
    datasource = load_yaml(REPO / "monitoring/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    for board in boards:
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
                assert panel["targets"], panel["title"]


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_panels_do_not_overlap(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboards.load(path)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_overview_covers_the_issue_per_model_and_per_key() -> None:
    exprs = " ".join(q.expr for q in dashboards.queries(REPO / dashboards.DASHBOARDS / "overview.json"))
    for needed in ("confgen_requests_total", 'status_code!="200"',
                   "confgen_input_tokens_total", "confgen_output_tokens_total",
                   "confgen_request_latency_seconds_bucket", "confgen_time_to_first_token_seconds_bucket",
                   "vllm:time_to_first_token_seconds_bucket",
                   "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                   "by (model)", "by (api_key_alias)", "0.5,", "0.95,", "0.99,"):
        assert needed in exprs, needed


def test_exporter_metrics_in_dashboards_are_allow_listed_with_a_source() -> None:
    allowed = load_yaml(REPO / "monitoring/exporter-metrics.yml")
    listed = {name for exporter in allowed.values() for name in exporter["metrics"]}
    for exporter in allowed.values():
        assert exporter["source"].startswith("https://")
    used = {n for p in BOARDS for q in dashboards.queries(p) for n in dashboards.metric_names(q.expr)}
    exporter_names = {n for n in used if n.startswith(("DCGM_", "container_", "machine_"))}
    assert exporter_names == listed


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = load_yaml(REPO / "monitoring/grafana/provisioning/dashboards/confgen.yml")["providers"][0]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./monitoring/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"


def test_compose_profile_binds_loopback_and_reads_secrets_from_files() -> None:
    doc = load_yaml(COMPOSE)
    services = doc["services"]
    assert set(services) == {"prometheus", "grafana", "node-exporter", "cadvisor", "dcgm-exporter"}
    for name, service in services.items():
        assert service["profiles"] == ["monitoring"], name
        for port in service.get("ports", []):
            assert port.startswith(("127.0.0.1:", "${MONITORING_BIND:-127.0.0.1}:")), (name, port)
    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/GRAFANA_ADMIN_PASSWORD"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    assert doc["secrets"]["GRAFANA_ADMIN_PASSWORD"] == {"file": "./secrets/GRAFANA_ADMIN_PASSWORD"}
    assert services["prometheus"]["secrets"] == ["LITELLM_MASTER_KEY", "VLLM_API_KEY"]


def test_compose_file_is_valid_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_prometheus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfgenError) as err:
        monitoring.binary({"PATH": str(tmp_path)})
    assert str(err.value) == ("--monitoring (MONITORING): the prometheus command is not installed "
                              "(apt-get install prometheus (Debian), or start without --monitoring)")


def test_prometheus_argv_binds_loopback(tmp_path: Path) -> None:
    from confgen.runtime.rundir import RunDir

    run = RunDir(tmp_path)
    assert monitoring.argv("/usr/bin/prometheus", tmp_path / "p.yml", run, 9999) == [
        "/usr/bin/prometheus", f"--config.file={tmp_path / 'p.yml'}", f"--storage.tsdb.path={tmp_path / 'prometheus'}",
        "--storage.tsdb.retention.time=7d", "--web.listen-address=127.0.0.1:9999"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_up_with_monitoring_refuses_before_starting_anything(
    run_cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(host_mod, "detect", lambda: host_mod.HostInfo(gpu=False, gpu_reason="none", docker=False))
    run_dir = tmp_path / "run"
    result = run_cli("up", env={"MODEL": "tiny-cpu", "MONITORING": "1", "CONFGEN_RUN_DIR": str(run_dir),
                                "PATH": str(tmp_path), "LITELLM_PORT": str(free_port()),
                                "VLLM_PORT": str(free_port())})
    assert result.exit_code == 1, result.output
    assert "error: --monitoring (MONITORING): the prometheus command is not installed" in result.stderr
    assert not (run_dir / "state.json").exists()
