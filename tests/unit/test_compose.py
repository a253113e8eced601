"""The Docker deployment without Docker: multi-model compose generation (with the GPU planner's shares),
the container entrypoints' inputs, and the launcher's refusals that come before any container."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from confgen.catalog import select
from confgen.cli import cli
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project
from confgen.merge import service_label
from confgen.plan import plan_selection
from confgen.render import compose
from confgen.runtime import docker_host, gateway_exec
from confgen.runtime.deployment import plan_deployment
from confgen.runtime.entrypoint import override_flags, prepare
from tests.conftest import REPO

REPO_PROJECT = Project(REPO)
FITS = ["gpt-oss-20b", "qwen3-coder-30b"]  # together on one DGX Spark (confgen plan)
TOO_BIG = ["glm47-flash", "gpt-oss-120b"]  # 138 GB: not on one DGX Spark


def _repo_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["--root", str(REPO), *args])


def _doc(names: list[str], gpu: str | None = "dgx-spark") -> dict[str, Any]:
    return compose.build(REPO_PROJECT, plan_deployment(select(REPO_PROJECT, names, {}), gpu))


def test_service_labels_are_dns_labels() -> None:
    assert service_label("qwen2.5-1.5b-instruct") == "qwen2-5-1-5b-instruct"
    assert compose.service_name("gpt-oss-20b") == "vllm-gpt-oss-20b"


def test_one_vllm_service_per_model_with_the_planner_share() -> None:
    doc = _doc(FITS)
    plan = plan_selection(select(REPO_PROJECT, FITS, {}), "dgx-spark")
    services = doc["services"]
    assert list(services) == ["vllm-gpt-oss-20b", "vllm-qwen3-coder-30b", "gateway", "db", "redis"]
    for model in plan.models:
        env = services[compose.service_name(model.name)]["environment"]
        assert env["MODEL"] == model.name
        assert env["GATEWAY_MODELS"] == "gpt-oss-20b qwen3-coder-30b"
        assert env["VLLM_API_HOST"] == "vllm-{name}"
        assert env["CONFGEN_VLLM_ARGS"] == f"--gpu-memory-utilization {model.gpu_memory_utilization:.2f}"
    assert sum(plan.shares.values()) <= plan.ceiling
    # One at a time (cudaMemGetInfo on a Spark), the gateway after all of them, the database and Redis.
    assert services["vllm-qwen3-coder-30b"]["depends_on"] == {"vllm-gpt-oss-20b": {"condition": "service_healthy"}}
    assert "depends_on" not in services["vllm-gpt-oss-20b"]
    assert services["gateway"]["depends_on"] == {s: {"condition": "service_healthy"}
                                                 for s in ("vllm-gpt-oss-20b", "vllm-qwen3-coder-30b", "db", "redis")}
    devices = services["vllm-gpt-oss-20b"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_context_and_concurrency_set_the_planned_flags() -> None:
    selection = select(REPO_PROJECT, ["gpt-oss-20b"], {})
    deployment = plan_deployment(selection, "dgx-spark", context=16384, concurrency=4)
    assert deployment.vllm_args["gpt-oss-20b"].split()[2:] == ["--max-model-len", "16384", "--max-num-seqs", "4"]


def test_a_cpu_deployment_uses_the_cpu_image_and_no_gpu() -> None:
    doc = _doc(["tiny-cpu"])
    node = doc["services"]["vllm-tiny-cpu"]
    assert node["build"] == {"context": ".", "dockerfile": "Dockerfile.cpu",
                             "args": {"VLLM_IMAGE": "${VLLM_IMAGE:-scitrera/dgx-spark-vllm:0.16.0-t5}"}}
    assert "deploy" not in node
    assert "./.local/models:/app/.local/models:ro" in node["volumes"]
    assert node["environment"]["CONFGEN_VLLM_ARGS"] == ""


def test_the_gateway_routes_to_each_service_by_name(project: Project, write_model: Callable[..., Path],
                                                    tiny_doc: dict[str, Any]) -> None:
    tiny_doc["serve"]["port"] = 8002
    write_model("tiny.b", tiny_doc)
    selection = select(project, ["tiny-cpu", "tiny.b"], {"VLLM_API_HOST": "vllm-{name}"})
    assert [m.api_base for m in selection.models] == ["http://vllm-tiny-cpu:8000/v1", "http://vllm-tiny-b:8002/v1"]
    assert [m.argv[m.argv.index("--host") + 1] for m in selection.models] == ["127.0.0.1", "127.0.0.1"]


def test_compose_refuses_a_selection_that_does_not_fit_with_the_numbers() -> None:
    result = _repo_cli("compose", *(a for n in TOO_BIG for a in ("--model", n)), "--gpu", "dgx-spark")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: --model on dgx-spark: does not fit: needs 1")
    assert "short by" in lines[0]
    assert lines[1].startswith("error: --model on dgx-spark: needs per model: glm47-flash ")
    assert "what would fit: one model fewer" in lines[1]


def test_compose_refuses_gpu_and_cpu_models_together() -> None:
    result = _repo_cli("compose", "--model", "tiny-cpu", "--model", "gpt-oss-20b")
    assert result.exit_code == 2
    assert result.stderr == ("error: --model: mixes GPU and CPU models: tiny-cpu (cpu), gpt-oss-20b (gpu) "
                             "(deploy GPU models and CPU models separately)\n")


def test_compose_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "docker-compose.models.yml"
    result = _repo_cli("compose", *(a for n in FITS for a in ("--model", n)), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {out}\n"
    text = out.read_text()
    assert text.startswith("# Generated by `confgen compose`")
    assert yaml.safe_load(text) == _doc(FITS)


BASE_ARGV = ["vllm", "serve", "m", "--max-model-len", "512", "--host", "h", "--port", "1"]


@pytest.mark.parametrize(("extra", "expected"), [
    ("--gpu-memory-utilization 0.4", [*BASE_ARGV, "--gpu-memory-utilization", "0.4"]),
    ("--max_model_len=256", ["vllm", "serve", "m", "--host", "h", "--port", "1", "--max-model-len", "256"]),
    ("", BASE_ARGV),
])
def test_vllm_args_replace_the_file_flags(extra: str, expected: list[str]) -> None:
    assert override_flags(BASE_ARGV, extra) == expected


@pytest.mark.parametrize(("extra", "what"), [
    ("--port 9", "CONFGEN_VLLM_ARGS: --port is set by the launcher (remove it)"),
    ("0.4", "CONFGEN_VLLM_ARGS: expected --flag value pairs, got '0.4' (e.g. --gpu-memory-utilization 0.4)"),
    ("--enforce-eager", "CONFGEN_VLLM_ARGS: expected --flag value pairs, got '--enforce-eager' "
                        "(e.g. --gpu-memory-utilization 0.4)"),
])
def test_bad_vllm_args_are_refused(extra: str, what: str) -> None:
    with pytest.raises(ConfgenError) as err:
        override_flags(["vllm", "serve", "m"], extra)
    assert str(err.value) == what


def test_every_node_renders_the_gateway_config_for_all_models(project: Project, write_model: Callable[..., Path],
                                                            write_secret: Callable[[str, str], Path],
                                                            tiny_doc: dict[str, Any], tmp_path: Path) -> None:
    tiny_doc["serve"]["port"] = 8002
    write_model("tiny-b", tiny_doc)
    write_secret("VLLM_API_KEY", "sk-" + "v" * 40)
    launch = prepare(project, "tiny-b", tmp_path / "out", {}, routes=("tiny-cpu", "tiny-b"),
                     vllm_args="--gpu-memory-utilization 0.3")
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert [m["model_name"] for m in config["model_list"]] == ["tiny-cpu", "tiny-b"]
    assert launch.model.name == "tiny-b"
    assert launch.argv[-2:] == ["--gpu-memory-utilization", "0.3"]
    assert "--port" in launch.argv
    assert launch.argv[launch.argv.index("--port") + 1] == "8002"
    with pytest.raises(ConfgenError, match=r"GATEWAY_MODELS: does not name MODEL=tiny-b \(add tiny-b to the list\)"):
        prepare(project, "tiny-b", tmp_path / "out", {}, routes=("tiny-cpu",))


def test_gateway_secrets_come_from_files(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    with pytest.raises(ConfgenError) as err:
        gateway_exec.read_secret_files(folder)
    assert [p.where for p in err.value.problems] == ["secrets/LITELLM_MASTER_KEY", "secrets/VLLM_API_KEY"]
    assert all(p.what == "missing secret" for p in err.value.problems)
    (folder / "LITELLM_MASTER_KEY").write_text("sk-" + "m" * 40)
    (folder / "VLLM_API_KEY").write_text("sk-1234")
    with pytest.raises(ConfgenError, match="secrets/VLLM_API_KEY: weak secret"):
        gateway_exec.read_secret_files(folder)
    (folder / "VLLM_API_KEY").write_text("sk-" + "v" * 40)
    (folder / "POSTGRES_PASSWORD").write_text("pg-password-0123456789\n")
    env = gateway_exec.read_secret_files(folder)
    assert env == {"LITELLM_MASTER_KEY": "sk-" + "m" * 40, "VLLM_API_KEY": "sk-" + "v" * 40,
                   "PGPASSWORD": "pg-password-0123456789"}


def test_the_gateway_never_gets_database_url() -> None:
    env = gateway_exec.store_settings({"CONFGEN_DATABASE_URL": "postgresql://confgen@db:5432/confgen",
                                       "CONFGEN_REDIS_URL": "none"})
    assert env["DATABASE_URL"] == "postgresql://confgen@db:5432/confgen"  # for the migrations, in-process
    assert env["REDIS_URL"] == "none"


def test_gateway_waits_for_the_config_then_says_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as err:
        gateway_exec.wait_for_config(tmp_path / "config.yaml", wait_s=0.2, poll_s=0.05)
    assert str(err.value) == (f"{tmp_path / 'config.yaml'}: not written after 0 s (the vLLM node writes it at "
                              "start-up: see `docker compose logs vllm-node`)")


@pytest.mark.parametrize(("reason", "profile"), [
    ("GPU 0: NVIDIA GB10 (UUID: GPU-1)", "dgx-spark"),
    ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-2)", "h100-80gb"),
    ("GPU 0: NVIDIA H200 (UUID: GPU-3)", "h200-141gb"),
    ("GPU 0: NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada-48gb"),
])
def test_gpu_profile_from_nvidia_smi(reason: str, profile: str) -> None:
    assert docker_host.gpu_profile({}, reason) == profile
    assert docker_host.gpu_profile({"CONFGEN_GPU": "l40s-48gb"}, reason) == "l40s-48gb"


def test_an_unknown_gpu_asks_for_a_profile() -> None:
    with pytest.raises(ConfgenError) as err:
        docker_host.gpu_profile({}, "GPU 0: NVIDIA T4")
    assert str(err.value).startswith("CONFGEN_GPU: no GPU profile matches this GPU (GPU 0: NVIDIA T4) (set CONFGEN_GPU")


def _up(project: Project, env: dict[str, str]) -> Result:
    return CliRunner(env=env).invoke(cli, ["--root", str(project.root), "up", "--timeout", "5"])


def test_docker_absent_is_said_before_anything_is_created(project: Project, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _up(project, {"CONFGEN_DEPLOY": "docker", "MODEL": "tiny-cpu", "PATH": str(empty),
                           "CONFGEN_RUN_DIR": str(tmp_path / "run")})
    assert result.exit_code == 3
    assert result.stderr.startswith("error: docker: Docker is not installed ('docker' is not on PATH) (install "
                                    "Docker Engine with the Compose plugin")
    assert "MODEL=tiny-cpu ./runMe.sh" in result.stderr
    assert not project.secrets_dir.exists()


def test_unknown_models_are_refused_before_docker(project: Project, tmp_path: Path) -> None:
    result = _up(project, {"MODELS": "tiny-cpu,nope", "PATH": str(tmp_path), "CONFGEN_RUN_DIR": str(tmp_path / "r")})
    assert result.exit_code == 1
    assert result.stderr == "error: MODELS: unknown model 'nope' (known models: tiny-cpu)\n"


def test_committed_compose_files_name_the_services_the_launcher_expects() -> None:
    base = compose.load_compose(REPO_PROJECT, compose.BASE)
    assert set(base["services"]) == {"vllm-node", "gateway", "db", "redis"}
    for name, service in base["services"].items():
        assert service.get("restart") == "unless-stopped", name
        assert "test" in service["healthcheck"], name
    assert base["services"]["gateway"]["ports"] == ["${GATEWAY_BIND:-127.0.0.1}:${LITELLM_PORT:-4000}:"
                                                    "${LITELLM_PORT:-4000}"]
    assert "ports" not in base["services"]["vllm-node"]  # reached through the gateway only
    assert "DATABASE_URL" not in base["services"]["gateway"]["environment"]
    # Limits are shared by the gateway's workers through Redis, which only the compose network reaches.
    redis = base["services"]["redis"]
    assert base["services"]["gateway"]["environment"]["CONFGEN_REDIS_URL"] == "redis://redis:6379/0"
    assert base["services"]["gateway"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert redis["image"] == "redis:7.2-alpine"
    assert redis["command"] == ["redis-server", "--save", "", "--appendonly", "no"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis
    assert base["volumes"]["generated_configs"]["driver_opts"]["type"] == "tmpfs"
    gpu = compose.load_compose(REPO_PROJECT, "docker-compose.gpu.yml")
    assert list(gpu["services"]) == ["vllm-node"]
