"""confgen k8s (confgen.render.k8s, confgen.commands.k8s): the structure of the manifests, the conventions,
the gateway config routing like `confgen render` and compose, no secret values, and the CLI's refusals.
kubernetes-validate, kubectl kustomize and the gateway serving through Service names: tests/e2e/test_k8s.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result

from confgen.catalog import select
from confgen.load import Project
from confgen.render import compose, litellm_config
from confgen.render.k8s import K8sOptions, render, write
from confgen.render.k8s.secrets import user_secrets
from confgen.runtime import entrypoint
from confgen.runtime.deployment import plan_deployment
from tests.conftest import REPO
from tests.k8s_support import (
    containers,
    defined,
    find,
    gateway_config,
    load_tree,
    manifests,
    of_kind,
    pod_spec,
    references,
    workloads,
)

RunCli = Callable[..., Result]
WriteModel = Callable[[str, Any], Path]
WriteSecret = Callable[[str, str], Path]
SECRETS = {"LITELLM_MASTER_KEY": "sk-master-k8s-test-0123456789", "VLLM_API_KEY": "sk-vllm-k8s-test-0123456789",
           "HF_TOKEN": "hf_k8s_test_token_0123456789", "POSTGRES_PASSWORD": "pg-k8s-test-password-0123"}
OPTION_SETS = {
    "defaults": K8sOptions(),
    "in-cluster-db": K8sOptions(postgres="in-cluster", redis="external", replicas={"big": 2}, host="llm.example.com",
                                ingress_class="nginx", storage_class="fast", gateway_replicas=3),
    "gateway-api": K8sOptions(edge="gateway-api", model_paths=True, host="llm.example.com", gateway_parent="infra/pub",
                              registry="reg.example.com/ml", tag="1.2.3", namespace="models"),
    "one-gateway": K8sOptions(gateway_replicas=1, redis="none", edge="none"),
}


@pytest.fixture
def two_models(project: Project, write_model: WriteModel, tiny_doc: dict[str, Any],
               write_secret: WriteSecret) -> Project:
    """tiny-cpu (CPU, a local folder) and big (GPU, tensor parallel 2, a hub id), plus every secret."""
    big = dict(tiny_doc)
    big["info"] = {**tiny_doc["info"], "device": "gpu", "weights_gb": 14, "gpu_memory_gb": 20}
    big["serve"] = {"port": 8001, "served_name": "big"}
    big["command"] = "vllm serve Org/Big-7B --max-model-len 4096 --tensor-parallel-size 2"
    write_model("big", big)
    for name, value in SECRETS.items():
        write_secret(name, value)
    return project


def rendered(project: Project, options: K8sOptions, tmp_path: Path, names: tuple[str, ...] = ("tiny-cpu", "big"),
             ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], Path]:
    out = tmp_path / "k8s"
    write(select(project, list(names), {}), options, out)
    files = load_tree(out)
    return files, manifests(files), out


@pytest.mark.parametrize("variant", OPTION_SETS)
def test_every_service_selects_a_workload(two_models: Project, tmp_path: Path, variant: str) -> None:
    _, objs, _ = rendered(two_models, OPTION_SETS[variant], tmp_path)
    for service in of_kind(objs, "Service"):
        wanted = service["spec"]["selector"]
        matches = [w for w in workloads(objs)
                   if wanted.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"Service {service['metadata']['name']} selects {len(matches)} workloads"
        ports = {p["name"] for c in containers(matches[0]) for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


@pytest.mark.parametrize("variant", OPTION_SETS)
def test_selectors_use_the_stable_labels_only(two_models: Project, tmp_path: Path, variant: str) -> None:
    _, objs, _ = rendered(two_models, OPTION_SETS[variant], tmp_path)
    for w in workloads(objs):
        selector = w["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "confgen"
        assert labels["app.kubernetes.io/managed-by"] == "confgen"
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == OPTION_SETS[variant].namespace


@pytest.mark.parametrize("variant", OPTION_SETS)
def test_references_exist_or_are_documented(two_models: Project, tmp_path: Path, variant: str) -> None:
    options = OPTION_SETS[variant]
    _, objs, out = rendered(two_models, options, tmp_path)
    missing = references(objs) - defined(objs)
    documented = {("Secret", s.name) for s in user_secrets(options)}
    assert missing == documented, "every Secret the manifests name is one the user creates, and no other"
    readme = (out / "README.md").read_text()
    for _, name in missing:
        assert f"`{name}`" in readme
    assert not of_kind(objs, "Secret"), "Secrets are referenced, never generated"


@pytest.mark.parametrize("variant", OPTION_SETS)
def test_probes_resources_and_pinned_images(two_models: Project, tmp_path: Path, variant: str) -> None:
    _, objs, _ = rendered(two_models, OPTION_SETS[variant], tmp_path)
    for w in workloads(objs):
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            assert {"readinessProbe", "livenessProbe"} <= c.keys(), where
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), where
            assert "memory" in c["resources"]["limits"], where
            name, _, tag = c["image"].rpartition(":")
            assert name, where
            assert tag not in {"", "latest"}, where
            assert "/" not in tag, where
            assert c["imagePullPolicy"] == "IfNotPresent", where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert all(var["name"] != "DATABASE_URL" for var in c.get("env", [])), where
        assert pod_spec(w)["securityContext"]["runAsNonRoot"] is True


def test_vllm_deployments(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(replicas={"big": 2}), tmp_path)
    big = find(objs, "Deployment", "vllm-big")
    (c,) = containers(big)
    assert big["spec"]["replicas"] == 2
    assert big["spec"]["strategy"] == {"type": "Recreate"}  # a full GPU node has no spare GPU to roll onto
    assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert c["command"] == ["/app/scripts/entrypoint.sh"]  # the Docker image's entrypoint -> confgen exec-vllm
    env = {v["name"]: v.get("value") for v in c["env"]}
    assert env == {"MODEL": "big", "VLLM_HOST": "0.0.0.0", "VLLM_PORT": "8001",
                   "VLLM_API_HOST": "vllm-big.llm.svc.cluster.local", "CONFGEN_OUT": "/app/generated_configs",
                   "HF_HOME": "/home/app/.cache/huggingface"}
    # 600 s + 30 s per GB of weights, in 10 s periods; liveness waits for it (it starts after startup).
    assert c["startupProbe"] == {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                                 "timeoutSeconds": 5, "failureThreshold": 102}
    assert c["readinessProbe"]["httpGet"]["path"] == c["livenessProbe"]["httpGet"]["path"] == "/health"
    spec = pod_spec(big)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == "vllm-big-cache"
    assert find(objs, "PersistentVolumeClaim", "vllm-big-cache")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/app/models/big.yml"]["subPath"] == "big.yml"
    assert mounts["/dev/shm"]["name"] == "dshm"
    assert find(objs, "PodDisruptionBudget", "vllm-big")["spec"]["maxUnavailable"] == 1
    tiny = find(objs, "Deployment", "vllm-tiny-cpu")
    (t,) = containers(tiny)
    assert "nvidia.com/gpu" not in t["resources"]["requests"]
    assert "nodeSelector" not in pod_spec(tiny)
    assert t["image"].startswith("confgen/vllm-node-cpu:")
    assert {"mountPath": "/app/.local/models/tiny-cpu", "name": "cache", "subPath": "local-model",
            "readOnly": True} in t["volumeMounts"]


def test_model_configmap_holds_the_generated_models_yml(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(), tmp_path)
    data = find(objs, "ConfigMap", "vllm-big-config")["data"]
    assert data["big.yml"] == (two_models.models_dir / "big.yml").read_text()
    assert data["vars.env"] == two_models.vars_env.read_text()
    entry = yaml.safe_load(data["models.yml"])["models"]["big"]
    assert entry["api_base"] == "http://vllm-big.llm.svc.cluster.local:8001/v1"
    assert entry["argv"][-7:] == ["--host", "0.0.0.0", "--port", "8001", "--served-model-name", "big", "Org/Big-7B"]
    template = find(objs, "Deployment", "vllm-big")["spec"]["template"]["metadata"]["annotations"]
    assert len(template["confgen/config-hash"]) == 16  # a changed ConfigMap rolls the pods


def test_gateway(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(), tmp_path)
    deployment = find(objs, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] >= 2
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["minReplicas"] == 2
    assert hpa["scaleTargetRef"]["name"] == "gateway"
    assert find(objs, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1
    (c,) = containers(deployment)
    assert c["command"] == ["/app/scripts/gateway-entrypoint.sh"]
    env = {v["name"]: v for v in c["env"]}
    assert env["CONFGEN_REDIS_URL"]["value"] == "redis://redis.llm.svc.cluster.local:6379/0"
    assert env["CONFGEN_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "confgen-database",
                                                                         "key": "DATABASE_URL"}}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    secrets = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "secrets")
    paths = {i["path"] for s in secrets["projected"]["sources"] for i in s["secret"]["items"]}
    assert paths == {"LITELLM_MASTER_KEY", "VLLM_API_KEY"}
    config = gateway_config(objs)
    assert [m["litellm_params"]["api_base"] for m in config["model_list"]] == [
        "http://vllm-tiny-cpu.llm.svc.cluster.local:8000/v1", "http://vllm-big.llm.svc.cluster.local:8001/v1"]
    # Two gateways: LiteLLM's cooldowns and health verdicts are shared through Redis too.
    assert config["router_settings"]["redis_url"] == "os.environ/CONFGEN_REDIS_URL"


def test_network_policies_let_only_the_gateway_reach_vllm(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(postgres="in-cluster"), tmp_path)
    policies = of_kind(objs, "NetworkPolicy")
    deny = find(objs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway_labels = find(objs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    for name in ("vllm-big", "vllm-tiny-cpu", "redis", "postgres"):
        kind = "StatefulSet" if name == "postgres" else "Deployment"
        labels = find(objs, kind, name)["spec"]["template"]["metadata"]["labels"]
        allowing = [p for p in policies if p["spec"]["podSelector"]
                    and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert allowing, name
        for policy in allowing:
            for rule in policy["spec"]["ingress"]:
                (source,) = rule["from"]
                assert source["podSelector"]["matchLabels"].items() <= gateway_labels.items()


def test_ingress_and_http_routes(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(host="llm.example.com", ingress_class="traefik"), tmp_path)
    ingress = find(objs, "Ingress", "gateway")["spec"]
    assert ingress["tls"] == [{"secretName": "confgen-tls", "hosts": ["llm.example.com"]}]
    assert ingress["ingressClassName"] == "traefik"
    (path,) = ingress["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "gateway", "port": {"name": "http"}}
    _, objs, _ = rendered(two_models, OPTION_SETS["gateway-api"], tmp_path / "api")
    routes = {r["metadata"]["name"]: r["spec"] for r in of_kind(objs, "HTTPRoute")}
    assert set(routes) == {"gateway", "vllm-big-path", "vllm-tiny-cpu-path"}
    assert routes["gateway"]["parentRefs"] == [{"name": "pub", "namespace": "infra"}]
    rewrites = {rule["matches"][0]["path"]["value"]: rule["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"]
                for rule in routes["vllm-big-path"]["rules"]}
    # nginx's default per-model design: through the gateway's Azure-style routes, the path picks the model.
    assert rewrites == {"/big/v1/chat/completions": "/openai/deployments/big/chat/completions",
                        "/big/v1/completions": "/openai/deployments/big/completions",
                        "/big/v1/embeddings": "/openai/deployments/big/embeddings"}
    assert all(len(spec["rules"]) <= 16 for spec in routes.values())  # Gateway API's limit per route


def _model_list(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The routing, api_base's host aside: the entries with each api_base reduced to its port and path."""
    entries = []
    for entry in config["model_list"]:
        params = dict(entry["litellm_params"])
        params["api_base"] = params["api_base"].split(":", 2)[2]
        entries.append({**entry, "litellm_params": params})
    return entries


def test_routing_is_that_of_confgen_render(two_models: Project, tmp_path: Path) -> None:
    _, objs, _ = rendered(two_models, K8sOptions(), tmp_path)
    local = yaml.safe_load(litellm_config.render(select(two_models, ["tiny-cpu", "big"], {}))["config.yaml"])
    assert _model_list(gateway_config(objs)) == _model_list(local)
    assert [m["model_name"] for m in local["model_list"]] == ["tiny-cpu", "big"]


def test_routing_is_that_of_compose(two_models: Project, write_model: WriteModel, tiny_doc: dict[str, Any],
                                    tmp_path: Path) -> None:
    """The compose deployment renders its gateway config inside each vLLM node (exec-vllm with the service's
    environment); the same selection in Kubernetes routes the same, only the hosts differ."""
    for name in (compose.BASE, compose.DEVICE_OVERRIDE["cpu"]):
        shutil.copy(REPO / name, two_models.root / name)
    write_model("small-cpu", {**tiny_doc, "serve": {"port": 8002}})
    names = ["tiny-cpu", "small-cpu"]
    doc = compose.build(two_models, plan_deployment(select(two_models, names, {}), None))
    env = {k: str(v) for k, v in doc["services"]["vllm-tiny-cpu"]["environment"].items()}
    out = tmp_path / "compose-node"
    entrypoint.prepare(two_models, "tiny-cpu", out, env, routes=tuple(env["GATEWAY_MODELS"].split()),
                       vllm_args=env["CONFGEN_VLLM_ARGS"])
    composed = yaml.safe_load((out / "config.yaml").read_text())
    _, objs, _ = rendered(two_models, K8sOptions(), tmp_path, names=tuple(names))
    ours = gateway_config(objs)
    assert _model_list(ours) == _model_list(composed)
    assert [m["litellm_params"]["api_base"] for m in composed["model_list"]] == [
        "http://vllm-tiny-cpu:8000/v1", "http://vllm-small-cpu:8002/v1"]
    assert [m["litellm_params"]["api_base"] for m in ours["model_list"]] == [
        "http://vllm-tiny-cpu.llm.svc.cluster.local:8000/v1", "http://vllm-small-cpu.llm.svc.cluster.local:8002/v1"]


@pytest.mark.parametrize("variant", OPTION_SETS)
def test_no_secret_value_in_any_file(two_models: Project, tmp_path: Path, variant: str) -> None:
    _, _, out = rendered(two_models, OPTION_SETS[variant], tmp_path)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        for name, value in SECRETS.items():
            assert value not in text, f"{path}: holds the value of {name}"


def test_a_secret_value_in_the_catalog_is_refused(two_models: Project, write_model: WriteModel,
                                                  tiny_doc: dict[str, Any], tmp_path: Path) -> None:
    tiny_doc["info"]["description"] = f"oops {SECRETS['VLLM_API_KEY']}"
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(Exception, match="would contain the value of secret VLLM_API_KEY"):
        render(select(two_models, ["tiny-cpu"], {}), K8sOptions())


def test_kustomizations(two_models: Project, tmp_path: Path) -> None:
    """What `kubectl kustomize` reads, checked without it: each resource listed exists, each manifest is listed."""
    files, _, out = rendered(two_models, K8sOptions(replicas={"big": 2}), tmp_path)
    (base,) = files["base/kustomization.yaml"]
    assert base["namespace"] == "llm"
    listed = set(base["resources"])
    assert listed == {Path(n).name for n in files if n.startswith("base/") and not n.endswith("kustomization.yaml")}
    for overlay in ("dev", "prod"):
        (k,) = files[f"overlays/{overlay}/kustomization.yaml"]
        assert k["resources"] == ["../../base"]
        assert (out / "overlays" / overlay / "../../base/kustomization.yaml").resolve().is_file()
        assert k["labels"] == [{"pairs": {"confgen/environment": overlay}, "includeSelectors": False}]
    (dev,) = files["overlays/dev/kustomization.yaml"]
    patched = {(p["target"]["kind"], p["target"]["name"]): yaml.safe_load(p["patch"]) for p in dev["patches"]}
    assert patched[("Deployment", "vllm-big")] == [{"op": "replace", "path": "/spec/replicas", "value": 1}]
    (prod,) = files["overlays/prod/kustomization.yaml"]
    assert {i["name"] for i in prod["images"]} == {"confgen/gateway", "confgen/vllm-node", "confgen/vllm-node-cpu"}


def test_cli_writes_the_tree(two_models: Project, run_cli: RunCli, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = run_cli("k8s", "--model", "tiny-cpu", "--model", "big", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {out}/base/namespace.yaml"
    assert lines[-1] == (f"next: create the Secrets listed in {out}/README.md, then kubectl apply -k "
                         f"{out}/overlays/prod")
    assert {Path(line.split()[1]).relative_to(out).as_posix() for line in lines[:-1]} == {
        "base/namespace.yaml", "base/vllm-tiny-cpu.yaml", "base/vllm-big.yaml", "base/gateway.yaml",
        "base/redis.yaml", "base/network-policies.yaml", "base/ingress.yaml", "base/kustomization.yaml",
        "overlays/dev/kustomization.yaml", "overlays/prod/kustomization.yaml", "README.md"}


@pytest.mark.parametrize(("args", "message"), [
    (["--replicas", "big=two"], "Invalid value for '--replicas': 'big=two': expected NAME=COUNT with COUNT 1-64, "
                                "e.g. glm47-flash=2"),
    (["--replicas", "other=2"], "error: --replicas: names models not selected: other (use one of: tiny-cpu, big)"),
    (["--redis", "none"], "error: --redis none: 2 gateway replicas would each count limits on their own (keep "
                          "--redis in-cluster (or external), or --gateway-replicas 1)"),
    (["--model-paths"], "error: --model-paths: per-model paths rewrite /<model>/v1/... to the gateway's "
                        "/openai/deployments/<name>/...; an Ingress cannot rewrite paths without controller-specific "
                        "annotations (add --edge gateway-api (HTTPRoute))"),
    (["--tag", "latest"], "error: --tag: 'latest' is not a pinned image tag (use a version such as 0.1.0 (never "
                          "latest))"),
    (["--namespace", "LLM"], "error: --namespace: 'LLM' is not a namespace name (lowercase letters, digits and '-', "
                             "at most 63 characters)"),
    (["--shm-size", "16G"], "error: --shm-size: '16G' is not a size (e.g. 16Gi (Ki, Mi, Gi or Ti))"),
])
def test_cli_refusals(two_models: Project, run_cli: RunCli, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "refused"
    result = run_cli("k8s", "--model", "tiny-cpu", "--model", "big", "--out", str(out), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not out.exists()


def test_deployments_yml_as_the_cluster_sees_it(two_models: Project, tmp_path: Path) -> None:
    """Host replicas in deployments.yml become the model's Service (its pods: --replicas); fallbacks stay."""
    (two_models.root / "deployments.yml").write_text(yaml.safe_dump({"models": {"big": {
        "replicas": [{"api_base": "http://gpu-a.lan:8001/v1"}, {"api_base": "http://gpu-b.lan:8001/v1"}],
        "fallbacks": ["tiny-cpu"]}}}))
    _, objs, _ = rendered(two_models, K8sOptions(), tmp_path)
    config = gateway_config(objs)
    bases = [(m["model_name"], m["litellm_params"]["api_base"]) for m in config["model_list"]]
    assert bases == [("tiny-cpu", "http://vllm-tiny-cpu.llm.svc.cluster.local:8000/v1"),
                     ("big", "http://vllm-big.llm.svc.cluster.local:8001/v1")]
    assert config["router_settings"]["fallbacks"] == [{"big": ["tiny-cpu"]}]
    text = find(objs, "ConfigMap", "gateway-config")["data"]["config.yaml"]
    assert "# Routing: deployments.yml, as confgen k8s deploys it (one Service per model)." in text
