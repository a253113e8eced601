"""The LiteLLM gateway: its config (the same template as `confgen render`, api_base = each model's Service
DNS name), Deployment (2+ replicas, the Docker image's entrypoint -> confgen exec-gateway), Service, HPA, PDB."""

from __future__ import annotations

from confgen.catalog import Selection
from confgen.load import model_names
from confgen.render import litellm_config
from confgen.render.k8s import meta, vllm
from confgen.render.k8s.meta import Obj
from confgen.render.k8s.options import K8sOptions
from confgen.render.k8s.secrets import DATABASE, MASTER_KEY, POSTGRES_PASSWORD, REDIS_URL, VLLM_API_KEY
from confgen.routing.load import FILE_NAME, deployments_path, load_deployments
from confgen.routing.plan import RoutePlan, plan_routes
from confgen.routing.schema import DeploymentsFile, ModelDeployment, Replica

NAME = "litellm"
COMPONENT = "gateway"
CONFIG_DIR = "/app/generated_configs"  # where exec-gateway reads config.yaml (scripts/gateway-entrypoint.sh)
SECRETS_DIR = "/run/secrets"  # exec-gateway's --secrets default: the folder must be named secrets
SPOOL = "/var/lib/confgen/spool"  # the usage ledger's spool while PostgreSQL is down


def cluster_routes(cluster: Selection, options: K8sOptions) -> RoutePlan:
    """deployments.yml as the cluster sees it: a model's one replica is its Service (which spreads the
    requests over the model's pods; --replicas sets how many), its fallbacks and tuning stay, and the
    gateway instances are the gateway's replicas (more than one: shared state in Redis)."""
    project = cluster.project
    parsed = load_deployments(project, model_names(project)) or DeploymentsFile()
    models = {}
    for m in cluster.models:
        own = parsed.models.get(m.name)
        kept = own.model_dump(exclude={"replicas"}) if own else {}
        models[m.name] = ModelDeployment(**kept, replicas=[Replica(api_base=m.api_base)])
    instances = options.gateway_replicas
    view = parsed.model_copy(update={"models": models,
                                     "gateway": parsed.gateway.model_copy(update={"instances": instances})})
    origin = FILE_NAME if deployments_path(project).is_file() else "built-in defaults"
    source = f"{origin}, as confgen k8s deploys it (one Service per model)"
    return plan_routes(cluster, view, source)


def litellm_config_text(selection: Selection, options: K8sOptions) -> str:
    """config.yaml rendered from the project's template, every api_base at a model's Service."""
    cluster = Selection(selection.project, selection.gvars,
                        tuple(vllm.model_view(m, options) for m in selection.models))
    return litellm_config.render(cluster, cluster_routes(cluster, options))["config.yaml"]


def config_data(selection: Selection, options: K8sOptions) -> dict[str, str]:
    project = selection.project
    vars_env = project.vars_env.read_text(encoding="utf-8") if project.vars_env.is_file() else ""
    return {"config.yaml": litellm_config_text(selection, options), "vars.env": vars_env}


def port(selection: Selection) -> int:
    return selection.gvars.settings.LITELLM_PORT


def objects(selection: Selection, options: K8sOptions) -> list[Obj]:
    ns = options.namespace
    labels = meta.labels(NAME, meta.GATEWAY, COMPONENT, options.tag)
    data = config_data(selection, options)
    docs = [
        {**meta.obj("v1", "ConfigMap", f"{meta.GATEWAY}-config", ns, labels), "data": data},
        _deployment(selection, options, labels, meta.config_hash(data)),
        _service(selection, labels, ns),
        _hpa(options, labels),
        _pdb(labels, ns),
    ]
    return docs


def _env(options: K8sOptions, listen_port: int) -> list[Obj]:
    values = {"LITELLM_HOST": "0.0.0.0", "LITELLM_PORT": str(listen_port),  # noqa: S104 - the pod's own addresses
              "CONFGEN_LEDGER_SPOOL": SPOOL, "TMPDIR": "/tmp"}  # noqa: S108 - an emptyDir
    if options.redis == "in-cluster":
        values["CONFGEN_REDIS_URL"] = f"redis://{options.fqdn(meta.REDIS)}:6379/0"
    elif options.redis == "none":
        values["CONFGEN_REDIS_URL"] = "none"
    if options.postgres == "in-cluster":
        # The password reaches libpq as PGPASSWORD (exec-gateway reads /run/secrets/POSTGRES_PASSWORD).
        values["CONFGEN_DATABASE_URL"] = f"postgresql://confgen@{options.fqdn(meta.POSTGRES)}:5432/confgen"
    out = meta.env(values)
    if options.redis == "external":
        out.append(meta.secret_env("CONFGEN_REDIS_URL", REDIS_URL.name, REDIS_URL.key))
    if options.postgres == "external":
        # Never DATABASE_URL: LiteLLM exits at start-up with it set and no Prisma (FINDINGS).
        out.append(meta.secret_env("CONFGEN_DATABASE_URL", DATABASE.name, DATABASE.key))
    return out


def _secret_files(options: K8sOptions) -> Obj:
    sources = [{"secret": {"name": s.name, "items": [{"key": s.key, "path": s.key}]}}
               for s in (MASTER_KEY, VLLM_API_KEY)]
    if options.postgres == "in-cluster":
        sources.append({"secret": {"name": POSTGRES_PASSWORD.name,
                                   "items": [{"key": POSTGRES_PASSWORD.key, "path": POSTGRES_PASSWORD.key}]}})
    return {"name": "secrets", "projected": {"defaultMode": 0o440, "sources": sources}}


def _deployment(selection: Selection, options: K8sOptions, labels: dict[str, str], digest: str) -> Obj:
    listen = port(selection)
    container: Obj = {
        "name": COMPONENT,
        "image": options.image("gateway"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/app/scripts/gateway-entrypoint.sh"],
        "env": _env(options, listen),
        "ports": [{"name": "http", "containerPort": listen, "protocol": "TCP"}],
        # ~0.4 GB per LiteLLM worker (FINDINGS); no CPU limit: throttling shows up as latency.
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "startupProbe": meta.http_probe("/health/liveliness", 5, 60, timeout=3),
        "readinessProbe": meta.http_probe("/health/readiness", 10, 3, timeout=5),
        "livenessProbe": meta.http_probe("/health/liveliness", 15, 4, timeout=5),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "config", "mountPath": "/app/vars.env", "subPath": "vars.env", "readOnly": True},
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "spool", "mountPath": "/var/lib/confgen"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
        ],
        # Writes go to the emptyDirs only (spool, /tmp): checked by running the image with --read-only
        # (tests/e2e/test_k8s.py).
        "securityContext": meta.container_security(read_only_root=True),
    }
    selector = meta.selector(NAME, meta.GATEWAY)
    pod: Obj = {
        "securityContext": meta.pod_security(meta.APP_UID),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # uvicorn drains open streams, then the usage ledger flushes (confgen.gateway.runtime).
        "terminationGracePeriodSeconds": 90,
        # Replicas on different nodes where there are several: one node down keeps the gateway up.
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": selector}}}]}},
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": f"{meta.GATEWAY}-config"}},
            _secret_files(options),
            {"name": "spool", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    spec: Obj = {
        "replicas": options.gateway_replicas,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels, "annotations": {meta.CONFIG_HASH: digest}}, "spec": pod},
    }
    return {**meta.obj("apps/v1", "Deployment", meta.GATEWAY, options.namespace, labels), "spec": spec}


def _service(selection: Selection, labels: dict[str, str], ns: str) -> Obj:
    spec = {"type": "ClusterIP", "selector": meta.selector(NAME, meta.GATEWAY),
            "ports": [{"name": "http", "port": port(selection), "targetPort": "http", "protocol": "TCP"}]}
    return {**meta.obj("v1", "Service", meta.GATEWAY, ns, labels), "spec": spec}


def _hpa(options: K8sOptions, labels: dict[str, str]) -> Obj:
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.GATEWAY},
        "minReplicas": options.gateway_replicas,
        "maxReplicas": options.gateway_max_replicas,
        "metrics": [{"type": "Resource",
                     "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    }
    return {**meta.obj("autoscaling/v2", "HorizontalPodAutoscaler", meta.GATEWAY, options.namespace, labels),
            "spec": spec}


def _pdb(labels: dict[str, str], ns: str) -> Obj:
    spec = {"minAvailable": 1, "selector": {"matchLabels": meta.selector(NAME, meta.GATEWAY)}}
    return {**meta.obj("policy/v1", "PodDisruptionBudget", meta.GATEWAY, ns, labels), "spec": spec}
