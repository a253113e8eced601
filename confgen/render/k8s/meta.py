"""Names, labels and the plain-dict building blocks every manifest shares; YAML out through PyYAML."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from confgen.errors import ConfgenError
from confgen.merge import service_label

Obj = dict[str, Any]

PART_OF = "confgen"
# Pod annotation: the hash of the config a pod was made with, so a changed ConfigMap rolls the pods
# (kustomize's configMapGenerator and Helm's checksum/config do the same).
CONFIG_HASH = "confgen/config-hash"
# The user the images run as (USER 1000:1000 in Dockerfile, Dockerfile.cpu, Dockerfile.gateway).
APP_UID = 1000

GATEWAY = "gateway"
REDIS = "redis"
POSTGRES = "postgres"


def model_service(model: str) -> str:
    """The model's Service (and Deployment) name: the compose service name (confgen.render.compose)."""
    name = f"vllm-{service_label(model)}"
    if len(name) > 63:
        raise ConfgenError.one(f"models/{model}.yml", f"the Service name {name!r} is longer than 63 characters",
                               "use a shorter model file name")
    return name


def selector(name: str, instance: str) -> dict[str, str]:
    """Only the stable pair: never the version, which changes on every upgrade."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": instance}


def labels(name: str, instance: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {**selector(name, instance), "app.kubernetes.io/component": component,
           "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "confgen"}
    if version:
        out["app.kubernetes.io/version"] = version
    return out


def obj(api: str, kind: str, name: str, namespace: str | None, object_labels: dict[str, str], *,
        annotations: dict[str, str] | None = None) -> Obj:
    metadata: Obj = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(object_labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


def config_hash(data: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode() + b"\0" + data[key].encode() + b"\0")
    return digest.hexdigest()[:16]


def http_probe(path: str, period: int, failures: int, timeout: int = 5) -> Obj:
    """An HTTP probe on the container port named http."""
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def pod_security(uid: int) -> Obj:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security(read_only_root: bool = False) -> Obj:
    out: Obj = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    if read_only_root:
        out["readOnlyRootFilesystem"] = True
    return out


def secret_env(var: str, secret: str, key: str) -> Obj:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def env(values: dict[str, str]) -> list[Obj]:
    return [{"name": k, "value": v} for k, v in values.items()]


# libyaml's emitter when PyYAML has it (5x faster than the pure-Python one); the same output.
_Base: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):  # type: ignore[valid-type, misc]
    """Block style everywhere; text with newlines (configs inside ConfigMaps) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


_STYLE: dict[str, Any] = {"sort_keys": False, "default_flow_style": False, "width": 120, "allow_unicode": True}


def dump(docs: list[Obj], header: str = "") -> str:
    """A multi-document YAML file, each document after `---`."""
    return header + str(yaml.dump_all(docs, Dumper=_Dumper, explicit_start=True, **_STYLE))


def dump_value(value: object) -> str:
    """One value as YAML text (a patch inside a kustomization)."""
    return str(yaml.dump(value, Dumper=_Dumper, **_STYLE))
