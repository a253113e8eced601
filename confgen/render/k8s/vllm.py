"""One model: ConfigMap (its source file, vars.env, the generated models.yml), HF-cache PVC, Deployment
running the Docker image's entrypoint (scripts/entrypoint.sh -> confgen exec-vllm), Service, PDB."""

from __future__ import annotations

import math
import posixpath
from dataclasses import replace

from confgen.catalog import Selection
from confgen.command import is_hub_id
from confgen.merge import ResolvedModel
from confgen.render import models_yml
from confgen.render.k8s import meta
from confgen.render.k8s.meta import Obj
from confgen.render.k8s.options import K8sOptions
from confgen.render.k8s.secrets import HF_TOKEN, VLLM_API_KEY

NAME = "vllm"
COMPONENT = "model-server"
APP = "/app"  # WORKDIR and --root of the images
CACHE = "/home/app/.cache"  # HF_HOME is CACHE/huggingface in the images; vLLM's compile cache lives here too
GENERATED = "/app/generated_configs"
# Startup budget: a fixed part (image start, CUDA graphs, torch.compile) plus download and load per GB.
STARTUP_BASE_S = 600
STARTUP_PER_GB_S = 30
PERIOD_S = 10


def gpus(m: ResolvedModel) -> int:
    """GPUs one pod needs: tensor x pipeline parallel size (both default 1)."""
    count = 1
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size"):
        value = m.command.flag_value(flag)
        if value and value.isdigit():
            count *= int(value)
    return count


def startup_failures(m: ResolvedModel) -> int:
    """startupProbe failureThreshold: download + load + compile, sized by the weights (vLLM k8s doc:
    a low threshold kills the pod mid-load with 'KeyboardInterrupt: terminated')."""
    budget = STARTUP_BASE_S + STARTUP_PER_GB_S * m.info.weights_gb
    return max(60, math.ceil(budget / PERIOD_S))


def cache_size_gi(m: ResolvedModel) -> int:
    return math.ceil(m.info.weights_gb * 1.2) + 10


def local_path(m: ResolvedModel) -> str | None:
    """Where a model that is a folder (not a hub id) lives in the container, e.g. /app/.local/models/x."""
    if is_hub_id(m.hf_id):
        return None
    return posixpath.normpath(posixpath.join(APP, m.hf_id))


def _resources(m: ResolvedModel) -> Obj:
    if m.info.device == "cpu":
        return {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    # Host memory while loading (safetensors are read through the page cache) plus /dev/shm, which counts
    # against the limit. GPUs: requests must equal limits and cannot be shared.
    memory = max(16, math.ceil(m.info.weights_gb * 0.5) + 8)
    count = str(gpus(m))
    return {"requests": {"cpu": "4", "memory": f"{memory}Gi", "nvidia.com/gpu": count},
            "limits": {"memory": f"{memory * 2}Gi", "nvidia.com/gpu": count}}


def model_view(m: ResolvedModel, options: K8sOptions) -> ResolvedModel:
    """The model as the cluster runs it: bound on the pod's addresses, reached through its Service."""
    return replace(m, host="0.0.0.0", api_host=options.fqdn(meta.model_service(m.name)))  # noqa: S104 - pod IP


def config_data(selection: Selection, m: ResolvedModel, options: K8sOptions) -> dict[str, str]:
    project = selection.project
    one = Selection(project, selection.gvars, (model_view(m, options),))
    data = models_yml.render(one)  # {"models.yml": ...}
    data[f"{m.name}.yml"] = (project.models_dir / f"{m.name}.yml").read_text(encoding="utf-8")
    data["vars.env"] = project.vars_env.read_text(encoding="utf-8") if project.vars_env.is_file() else ""
    return data


def objects(selection: Selection, m: ResolvedModel, options: K8sOptions) -> list[Obj]:
    ns = options.namespace
    service = meta.model_service(m.name)
    labels = meta.labels(NAME, service, COMPONENT, options.tag)
    data = config_data(selection, m, options)
    config = {**meta.obj("v1", "ConfigMap", f"{service}-config", ns, labels), "data": data}
    replicas = options.replicas_of(m.name)
    docs = [config, _pvc(m, service, labels, options, replicas),
            _deployment(m, service, labels, options, digest=meta.config_hash(data)),
            _service(m, service, labels, ns)]
    if replicas > 1:
        docs.append(_pdb(service, labels, ns))
    return docs


def _pvc(m: ResolvedModel, service: str, labels: dict[str, str], options: K8sOptions, replicas: int) -> Obj:
    # Pods of one model on several nodes share the cache: that needs a ReadWriteMany class (NFS, CephFS...).
    spec: Obj = {"accessModes": ["ReadWriteMany" if replicas > 1 else "ReadWriteOnce"],
                 "resources": {"requests": {"storage": f"{cache_size_gi(m)}Gi"}}}
    if options.storage_class:
        spec["storageClassName"] = options.storage_class
    return {**meta.obj("v1", "PersistentVolumeClaim", f"{service}-cache", options.namespace, labels), "spec": spec}


def _deployment(m: ResolvedModel, service: str, labels: dict[str, str], options: K8sOptions, *, digest: str) -> Obj:
    gpu = m.info.device == "gpu"
    # A rolling update starts the new pod before the old one stops: it needs spare GPUs, which a full
    # GPU node does not have. Recreate frees them first.
    strategy: Obj = ({"type": "Recreate"} if gpu
                     else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    startup = startup_failures(m)
    pod: Obj = {
        "securityContext": meta.pod_security(meta.APP_UID),
        "automountServiceAccountToken": False,
        # Service links would put VLLM_<SERVICE>_PORT=tcp://... into the environment, which vLLM reads.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "containers": [_container(m, service, options, startup)],
        "volumes": _volumes(m, service, options),
    }
    if gpu:
        # Placement hooks, patched per cluster in an overlay: GPU feature discovery's label and the
        # GPU operator's taint.
        pod["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec: Obj = {
        "replicas": options.replicas_of(m.name),
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": max(1200, startup * PERIOD_S + 300),
        "strategy": strategy,
        "selector": {"matchLabels": meta.selector(NAME, service)},
        "template": {"metadata": {"labels": labels, "annotations": {meta.CONFIG_HASH: digest}}, "spec": pod},
    }
    annotations = {"confgen/model": m.name}
    return {**meta.obj("apps/v1", "Deployment", service, options.namespace, labels, annotations=annotations),
            "spec": spec}


def _container(m: ResolvedModel, service: str, options: K8sOptions, startup: int) -> Obj:
    mounts: list[Obj] = [
        {"name": "secrets", "mountPath": f"{APP}/secrets", "readOnly": True},
        # The cluster runs the catalog it was generated from, whatever the image holds.
        {"name": "catalog", "mountPath": f"{APP}/models/{m.name}.yml", "subPath": f"{m.name}.yml", "readOnly": True},
        {"name": "catalog", "mountPath": f"{APP}/vars.env", "subPath": "vars.env", "readOnly": True},
        {"name": "catalog", "mountPath": "/etc/confgen", "readOnly": True},
        {"name": "generated", "mountPath": GENERATED},
        {"name": "cache", "mountPath": CACHE},
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - vLLM's shared memory, a memory emptyDir
    ]
    folder = local_path(m)
    if folder:
        mounts.append({"name": "cache", "mountPath": folder, "subPath": "local-model", "readOnly": True})
    return {
        "name": NAME,
        "image": options.image("vllm-node" if m.info.device == "gpu" else "vllm-node-cpu"),
        "imagePullPolicy": "IfNotPresent",
        # The Docker image's entrypoint: MODEL -> secrets -> configs -> exec vllm serve.
        "command": [f"{APP}/scripts/entrypoint.sh"],
        "env": meta.env({"MODEL": m.name, "VLLM_HOST": "0.0.0.0", "VLLM_PORT": str(m.port),  # noqa: S104
                         "VLLM_API_HOST": options.fqdn(service), "CONFGEN_OUT": GENERATED,
                         "HF_HOME": f"{CACHE}/huggingface"}),
        "ports": [{"name": "http", "containerPort": m.port, "protocol": "TCP"}],
        "resources": _resources(m),
        # vLLM's /health needs no key. Liveness starts only after the startup probe passed, so it never
        # kills a model that is still downloading or loading.
        "startupProbe": meta.http_probe("/health", PERIOD_S, startup),
        "readinessProbe": meta.http_probe("/health", 5, 3),
        "livenessProbe": meta.http_probe("/health", 15, 4, timeout=10),
        "volumeMounts": mounts,
        "securityContext": meta.container_security(),
    }


def _volumes(m: ResolvedModel, service: str, options: K8sOptions) -> list[Obj]:
    shm = options.shm_size if m.info.device == "gpu" else "1Gi"
    return [
        {"name": "secrets", "projected": {"defaultMode": 0o440, "sources": [
            {"secret": {"name": VLLM_API_KEY.name, "items": [{"key": VLLM_API_KEY.key, "path": "VLLM_API_KEY"}]}},
            {"secret": {"name": HF_TOKEN.name, "optional": True,
                        "items": [{"key": HF_TOKEN.key, "path": "HF_TOKEN"}]}},
        ]}},
        {"name": "catalog", "configMap": {"name": f"{service}-config"}},
        {"name": "generated", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "cache", "persistentVolumeClaim": {"claimName": f"{service}-cache"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
    ]


def _service(m: ResolvedModel, service: str, labels: dict[str, str], ns: str) -> Obj:
    spec = {"type": "ClusterIP", "selector": meta.selector(NAME, service),
            "ports": [{"name": "http", "port": m.port, "targetPort": "http", "protocol": "TCP"}]}
    return {**meta.obj("v1", "Service", service, ns, labels), "spec": spec}


def _pdb(service: str, labels: dict[str, str], ns: str) -> Obj:
    # maxUnavailable, not minAvailable: a drain may always take one pod (GPU nodes must stay drainable).
    spec = {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(NAME, service)}}
    return {**meta.obj("policy/v1", "PodDisruptionBudget", service, ns, labels), "spec": spec}
