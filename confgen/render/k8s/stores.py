"""The gateway's stores when they run in the cluster: Redis (shared limits across gateway replicas) and,
for small installs, PostgreSQL as a StatefulSet with a PVC (keys and the usage ledger)."""

from __future__ import annotations

from confgen.render.k8s import meta
from confgen.render.k8s.meta import Obj
from confgen.render.k8s.options import K8sOptions
from confgen.render.k8s.secrets import POSTGRES_PASSWORD

# The same images as the Docker deployment where it has one (docker-compose.yml: postgres:16).
REDIS_IMAGE = "redis:7.4"
POSTGRES_IMAGE = "postgres:16"
REDIS_UID = 999  # the redis and postgres images' own users
POSTGRES_UID = 999


def redis(options: K8sOptions) -> list[Obj]:
    ns = options.namespace
    labels = meta.labels("redis", meta.REDIS, "cache")
    selector = meta.selector("redis", meta.REDIS)
    # Counters only (rate limits, parallel slots): losing them on a restart is harmless, so no disk.
    container: Obj = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--save", "", "--appendonly", "no", "--maxmemory", "200mb", "--maxmemory-policy", "noeviction"],
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 15, "timeoutSeconds": 2,
                          "failureThreshold": 4},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": meta.container_security(read_only_root=True),
    }
    pod: Obj = {"securityContext": meta.pod_security(REDIS_UID), "automountServiceAccountToken": False,
                "enableServiceLinks": False, "containers": [container],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}]}
    deployment = {**meta.obj("apps/v1", "Deployment", meta.REDIS, ns, labels), "spec": {
        "replicas": 1, "revisionHistoryLimit": 3, "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels}, "spec": pod}}}
    service = {**meta.obj("v1", "Service", meta.REDIS, ns, labels), "spec": {
        "type": "ClusterIP", "selector": selector,
        "ports": [{"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}]}}
    return [deployment, service]


def postgres(options: K8sOptions) -> list[Obj]:
    ns = options.namespace
    labels = meta.labels("postgresql", meta.POSTGRES, "database")
    selector = meta.selector("postgresql", meta.POSTGRES)
    ready = {"exec": {"command": ["pg_isready", "-U", "confgen", "-d", "confgen", "-h", "127.0.0.1"]}}
    container: Obj = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "env": [*meta.env({"POSTGRES_USER": "confgen", "POSTGRES_DB": "confgen",
                           "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres/POSTGRES_PASSWORD",
                           # A folder below the mount: a fresh volume's root may hold lost+found.
                           "PGDATA": "/var/lib/postgresql/data/pgdata"})],
        "ports": [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "startupProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {**ready, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**ready, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                         {"name": "password", "mountPath": "/run/secrets/postgres", "readOnly": True},
                         {"name": "run", "mountPath": "/var/run/postgresql"}],
        "securityContext": meta.container_security(),
    }
    pod: Obj = {"securityContext": meta.pod_security(POSTGRES_UID), "automountServiceAccountToken": False,
                "enableServiceLinks": False, "terminationGracePeriodSeconds": 60, "containers": [container],
                "volumes": [{"name": "password", "secret": {
                                "secretName": POSTGRES_PASSWORD.name, "defaultMode": 0o440,
                                "items": [{"key": POSTGRES_PASSWORD.key, "path": "POSTGRES_PASSWORD"}]}},
                            {"name": "run", "emptyDir": {}}]}
    claim: Obj = {"metadata": {"name": "data", "labels": labels},
                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}
    if options.storage_class:
        claim["spec"]["storageClassName"] = options.storage_class
    statefulset = {**meta.obj("apps/v1", "StatefulSet", meta.POSTGRES, ns, labels), "spec": {
        "serviceName": meta.POSTGRES, "replicas": 1, "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels}, "spec": pod},
        "volumeClaimTemplates": [claim]}}
    service = {**meta.obj("v1", "Service", meta.POSTGRES, ns, labels), "spec": {
        "clusterIP": "None", "selector": selector,
        "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP"}]}}
    return [statefulset, service]
