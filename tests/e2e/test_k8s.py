"""confgen k8s against real tools: `kubectl kustomize` builds every overlay, `kubernetes-validate --strict`
accepts every object for the newest Kubernetes it bundles and the one a year older, and the gateway pod
(its ConfigMap, env and Secret files as the manifests say) serves two simulated vLLMs through their Service
DNS names mapped to loopback: as a local process and in the gateway image.

No cluster runs here (no registry for node images): what was and was not run is in docs/kubernetes.md.
Ports: gateways 14250-14251, simulators 15250-15251.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest

from confgen.catalog import select
from confgen.load import Project
from confgen.render.k8s import K8sOptions, write
from tests.e2e import docker_harness as dh
from tests.e2e.k8s_pod import GatewayPod, gateway_pod, service_hosts
from tests.e2e.keys_support import poll, redis_namespace, scratch_database
from tests.k8s_support import find, gateway_config, load_tree, manifests
from tests.simproc import SimProc, port_is_free, running_sim

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORT, IMAGE_GATEWAY_PORT = 14250, 14251
SIMS = {"alpha": 15250, "beta": 15251}
MASTER = "sk-master-" + secrets.token_hex(16)
VLLM_KEY = "sk-vllm-" + secrets.token_hex(16)
IMAGE = "confgen/gateway:k8s-e2e"
VARIANTS = {
    "defaults": K8sOptions(host="llm.example.com"),
    "in-cluster": K8sOptions(postgres="in-cluster", redis="external", replicas={"alpha": 2}, ingress_class="nginx",
                             storage_class="fast-rwx", gateway_replicas=3, gateway_max_replicas=9),
    "gateway-api": K8sOptions(edge="gateway-api", model_paths=True, host="llm.example.com", registry="reg.example/ml",
                              tag="2.0.1", namespace="models"),
}


def k8s_versions() -> list[str]:
    """The newest schema set kubernetes-validate bundles and the one a year older (three minors)."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    bundled = sorted({tuple(int(x) for x in p.name[1:].split("-")[0].split("."))
                      for p in folder.glob("v*-local-strict")})
    newest = bundled[-1]
    older = (newest[0], newest[1] - 3, 0)
    assert older in bundled, f"kubernetes-validate has no schemas for {older}"
    return [".".join(map(str, v)) for v in (newest, older)]


def project_with_models(root: Path) -> Project:
    (root / "models").mkdir(parents=True)
    (root / "secrets").mkdir()
    for name in ("vars.env", "litellm_config.template.yaml"):
        shutil.copy(ROOT / name, root / name)
    for name, port in SIMS.items():
        (root / "models" / f"{name}.yml").write_text(
            f"info: {{description: {name} for the Kubernetes tests, params: 1B, weights_gb: 2, gpu_memory_gb: 4, "
            f"device: gpu}}\nserve: {{port: {port}}}\ncommand: vllm serve org/{name.title()}-1B --max-model-len 4096\n"
            f"env: {{}}\nlitellm: {{max_tokens: 256, timeout: 60}}\n")
    for name, value in (("LITELLM_MASTER_KEY", MASTER), ("VLLM_API_KEY", VLLM_KEY)):
        (root / "secrets" / name).write_text(value + "\n")
    return Project(root)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return project_with_models(tmp_path_factory.mktemp("k8s") / "proj")


def render_to(project: Project, options: K8sOptions, out: Path) -> Path:
    write(select(project, list(SIMS), {}), options, out)
    return out


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_overlays_build_and_validate_strictly(project: Project, tmp_path: Path, variant: str) -> None:
    out = render_to(project, VARIANTS[variant], tmp_path / "out")
    validator = str(Path(sys.executable).parent / "kubernetes-validate")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        assert not os.environ.get("CI"), "kubectl (with kustomize) is on every machine of this kind: CI must run it"
        pytest.skip("kubectl is not installed here: the kustomize build is not run (the overlays' files are "
                    "still checked in tests/unit/test_k8s.py::test_kustomizations)")
    built = {}
    for target in ("base", "overlays/dev", "overlays/prod"):
        done = run([kubectl, "kustomize", str(out / target)])
        assert done.returncode == 0, f"kubectl kustomize {target}:\n{done.stderr}"
        built[target] = tmp_path / f"{target.replace('/', '-')}.yaml"
        built[target].write_text(done.stdout)
    plain = sorted(str(p) for p in (out / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    for version in k8s_versions():
        for files in (plain, *([str(p)] for p in built.values())):
            done = run([validator, "--strict", "-k", version, *files])
            assert done.returncode == 0, f"kubernetes-validate {version}:\n{done.stdout}\n{done.stderr}"
            assert "ERROR" not in done.stdout
            # Only the Gateway API's HTTPRoute has no bundled schema (it is a CRD): tests/unit checks its shape.
            for line in done.stdout.splitlines():
                if line.startswith("WARN"):
                    assert "kind HTTPRoute with api version gateway.networking.k8s.io/v1" in line, line
    dev = load_tree(tmp_path)["overlays-dev.yaml"]
    assert {d["metadata"]["labels"]["confgen/environment"] for d in dev} == {"dev"}
    assert all(d["spec"]["replicas"] == 1 for d in dev if d["kind"] == "Deployment"
               and d["metadata"]["name"].startswith("vllm-"))


def test_validation_catches_a_wrong_field(project: Project, tmp_path: Path) -> None:
    """The validator is not a rubber stamp: an unknown field in a Deployment fails --strict."""
    out = render_to(project, K8sOptions(), tmp_path / "out")
    path = out / "base" / "vllm-alpha.yaml"
    path.write_text(path.read_text().replace("revisionHistoryLimit: 3", "revisionHistoryLimit: 3\n  replica: 2"))
    done = run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", k8s_versions()[0],
                str(path)])
    assert done.returncode == 1
    assert "'replica' was unexpected" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimProc]]:
    with running_sim(SIMS["alpha"], "--served-model-name", "alpha", "org/Alpha-1B", "--ttft-ms", "1", "--itl-ms", "1",
                     "--output-tokens", "4", env={"VLLM_API_KEY": VLLM_KEY}) as alpha, \
         running_sim(SIMS["beta"], "--served-model-name", "beta", "org/Beta-1B", "--ttft-ms", "1", "--itl-ms", "1",
                     "--output-tokens", "4", env={"VLLM_API_KEY": VLLM_KEY}) as beta:
        yield {"alpha": alpha, "beta": beta}


@pytest.fixture(scope="module")
def cluster(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The default manifests, a scratch database as the external PostgreSQL, a Redis key prefix of our own."""
    out = render_to(project, K8sOptions(), tmp_path_factory.mktemp("cluster") / "out")
    objs = manifests(load_tree(out))
    with scratch_database() as database_url, redis_namespace() as prefix:
        yield {"objs": objs, "database_url": database_url, "redis_prefix": prefix}


def make_pod(cluster: dict[str, Any], project: Project, folder: Path, port: int) -> GatewayPod:
    return gateway_pod(cluster["objs"], folder, {("confgen-database", "DATABASE_URL"): cluster["database_url"]},
                       project.secrets_dir, {"LITELLM_HOST": "127.0.0.1", "LITELLM_PORT": str(port),
                                             "CONFGEN_REDIS_PREFIX": cluster["redis_prefix"]})


def exercise(base: str, objs: list[dict[str, Any]], sims: dict[str, SimProc]) -> None:
    """What clients and the kubelet do: the probes the manifest names, /v1/models, a request per model by body
    and by the per-model path the HTTPRoute rewrites to; each reaches its own simulator through its Service."""
    (container,) = find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, probe
    auth = {"Authorization": f"Bearer {MASTER}"}
    ids = {m["id"] for m in httpx.get(f"{base}/v1/models", headers=auth, timeout=10).json()["data"]}
    assert {"alpha", "beta"} <= ids
    for sim in sims.values():
        sim.reset_stats()
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    for name in ("alpha", "beta", "alpha"):
        resp = httpx.post(f"{base}/v1/chat/completions", headers=auth, json={**body, "model": name}, timeout=30)
        assert resp.status_code == 200, resp.text
        api_base = resp.headers.get("x-litellm-model-api-base", "")
        assert api_base.startswith(f"http://vllm-{name}.llm.svc.cluster.local:{SIMS[name]}"), api_base
    resp = httpx.post(f"{base}/openai/deployments/beta/chat/completions", headers=auth, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "beta"
    served = {name: sim.stats()["by_status"].get("200", 0) for name, sim in sims.items()}
    assert served == {"alpha": 2, "beta": 2}
    assert httpx.post(f"{base}/v1/chat/completions", json={**body, "model": "alpha"}, timeout=10).status_code == 401


def wait_up(base: str, alive: Any, log: Any, timeout: float = 180) -> None:
    def up() -> bool:
        if not alive():
            raise AssertionError(f"the gateway exited:\n{log()[-4000:]}")
        try:
            return httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll(up, timeout, interval=0.5, what=f"{base}/health/liveliness")


def test_gateway_process_serves_models_by_service_name(project: Project, cluster: dict[str, Any],
                                                       sims: dict[str, SimProc], tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        assert not os.environ.get("CI"), "CI runs as root with util-linux: this test must run there"
        pytest.skip("needs root and unshare for a private /etc/hosts (CI has both)")
    assert port_is_free(GATEWAY_PORT)
    pod = make_pod(cluster, project, tmp_path / "pod", GATEWAY_PORT)
    assert pod.hosts == ["redis.llm.svc.cluster.local", *service_hosts(gateway_config(cluster["objs"]))]
    argv, env = pod.process_argv()
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    try:
        wait_up(base, lambda: proc.poll() is None, log.read_text)
        exercise(base, cluster["objs"], sims)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # The machine's own /etc/hosts never saw the Service names.
    assert "svc.cluster.local" not in Path("/etc/hosts").read_text()


@pytest.fixture(scope="module")
def gateway_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Docker deployment's gateway image (Dockerfile.gateway), built offline as its own tests build it."""
    if shutil.which("dockerd") is None and not dh.daemon_answers():
        assert not os.environ.get("CI"), "CI installs docker.io (requirements/apt.txt): this test must run there"
        pytest.skip("no Docker engine here (apt-get install docker.io)")
    with dh.dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log"):
        dh.base_image()
        dh.wheelhouse()
        dh.must([dh.DOCKER, "build", "--network", "host", "--build-arg", "PIP_INDEX_ARGS=--no-index",
                 "-f", "Dockerfile.gateway", "-t", IMAGE, "."], timeout=1200, cwd=ROOT,
                env={**os.environ, "DOCKER_BUILDKIT": "1"})
        yield IMAGE


def test_gateway_image_serves_models_by_service_name(project: Project, cluster: dict[str, Any],
                                                     sims: dict[str, SimProc], gateway_image: str,
                                                     tmp_path: Path) -> None:
    assert port_is_free(IMAGE_GATEWAY_PORT)
    pod = make_pod(cluster, project, tmp_path / "pod", IMAGE_GATEWAY_PORT)
    assert pod.read_only_root, "the manifest asks for a read-only root filesystem: docker run --read-only"
    name = f"confgen-k8s-e2e-{secrets.token_hex(3)}"
    dh.must(pod.docker_argv(dh.DOCKER, gateway_image, name))
    base = f"http://127.0.0.1:{IMAGE_GATEWAY_PORT}"

    def running() -> bool:
        state = dh.sh([dh.DOCKER, "inspect", "-f", "{{.State.Running}}", name]).stdout.strip()
        return state == "true"

    def logs() -> str:
        done = dh.sh([dh.DOCKER, "logs", name])
        return done.stdout + done.stderr

    try:
        wait_up(base, running, logs)
        exercise(base, cluster["objs"], sims)
        started = time.monotonic()
        dh.must([dh.DOCKER, "stop", "--time", "30", name], timeout=60)
        assert time.monotonic() - started < 30, "the gateway did not stop on SIGTERM"
    finally:
        dh.sh([dh.DOCKER, "rm", "--force", name])
