"""kustomize: base/kustomization.yaml lists the plain manifests; overlays/dev and overlays/prod patch them.

Overlays keep the namespace: the gateway's config names each model's Service by its full DNS name
(<svc>.<namespace>.svc.cluster.local), which kustomize would not rewrite. Another namespace means
`confgen k8s --namespace`.
"""

from __future__ import annotations

from confgen.render.k8s import meta
from confgen.render.k8s.meta import Obj
from confgen.render.k8s.options import K8sOptions

API = "kustomize.config.k8s.io/v1beta1"
IMAGES = ("gateway", "vllm-node", "vllm-node-cpu")


def base(resources: list[str], options: K8sOptions) -> Obj:
    return {"apiVersion": API, "kind": "Kustomization", "namespace": options.namespace, "resources": resources}


def _patch(kind: str, name: str, ops: list[Obj]) -> Obj:
    return {"target": {"kind": kind, "name": name}, "patch": meta.dump_value(ops)}


def _environment(name: str) -> Obj:
    return {"pairs": {"confgen/environment": name}, "includeSelectors": False}


def dev(options: K8sOptions, model_deployments: list[str]) -> Obj:
    """A small cluster to try things on: one pod per model, the gateway at its minimum."""
    patches = [_patch("HorizontalPodAutoscaler", meta.GATEWAY,
                      [{"op": "replace", "path": "/spec/maxReplicas", "value": options.gateway_replicas}])]
    patches += [_patch("Deployment", name, [{"op": "replace", "path": "/spec/replicas", "value": 1}])
                for name in model_deployments]
    return {"apiVersion": API, "kind": "Kustomization", "resources": ["../../base"],
            "labels": [_environment("dev")], "patches": patches}


def prod(options: K8sOptions) -> Obj:
    """Production: images pinned in one place (set newName to your registry, or a digest)."""
    images = [{"name": options.image(name).rsplit(":", 1)[0], "newTag": options.tag} for name in IMAGES]
    return {"apiVersion": API, "kind": "Kustomization", "resources": ["../../base"],
            "labels": [_environment("prod")], "images": images}
