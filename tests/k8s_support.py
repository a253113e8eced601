"""Reading what `confgen k8s` wrote: every manifest as plain dicts, and what the objects reference.

    files = load_tree(out)                 # {"base/gateway.yaml": [doc, ...], "overlays/dev/kustomization.yaml": [...]}
    objs = manifests(files)                # the Kubernetes objects of base/ (no Kustomization)
    find(objs, "Deployment", "gateway")
    references(objs)                       # {("Secret", "confgen-vllm-api-key"), ("ConfigMap", ...), ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


def load_tree(out: Path) -> dict[str, list[Obj]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return {str(p.relative_to(out)): [d for d in yaml.load_all(p.read_text(encoding="utf-8"), Loader=loader)
                                      if d is not None]
            for p in sorted(out.rglob("*.yaml"))}


def manifests(files: dict[str, list[Obj]]) -> list[Obj]:
    return [d for name, docs in files.items() if name.startswith("base/") for d in docs if d["kind"] != "Kustomization"]


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in {"Deployment", "StatefulSet"}]


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _pod_references(spec: Obj) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for volume in spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        found |= {("ConfigMap", s["configMap"]["name"]) for s in sources if "configMap" in s}
        found |= {("Secret", s["secret"].get("secretName") or s["secret"]["name"]) for s in sources if "secret" in s}
        if "persistentVolumeClaim" in volume:
            found.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        refs = [v["valueFrom"] for v in c.get("env", []) if "valueFrom" in v] + c.get("envFrom", [])
        for ref in refs:
            for key, kind in (("secretKeyRef", "Secret"), ("secretRef", "Secret"),
                              ("configMapKeyRef", "ConfigMap"), ("configMapRef", "ConfigMap")):
                if key in ref:
                    found.add((kind, ref[key]["name"]))
    return found


def references(objs: list[Obj]) -> set[tuple[str, str]]:
    """Every ConfigMap, Secret and PVC an object names (volumes, projected sources, env, Ingress TLS)."""
    found: set[tuple[str, str]] = set()
    for o in workloads(objs):
        found |= _pod_references(pod_spec(o))
    for o in of_kind(objs, "Ingress"):
        found |= {("Secret", tls["secretName"]) for tls in o["spec"].get("tls", [])}
    return found


def defined(objs: list[Obj]) -> set[tuple[str, str]]:
    """What the manifests create, including the PVCs of StatefulSets' claim templates (<claim>-<set>-<n>)."""
    made = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for o in of_kind(objs, "StatefulSet"):
        for claim in o["spec"].get("volumeClaimTemplates", []):
            made.add(("PersistentVolumeClaim", claim["metadata"]["name"]))
    return made


def gateway_config(objs: list[Obj]) -> Obj:
    text = find(objs, "ConfigMap", "gateway-config")["data"]["config.yaml"]
    config: Obj = yaml.safe_load(text)
    return config
