"""What `confgen k8s` can be told: namespace, replicas, images, where Redis and PostgreSQL live, the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from confgen.errors import EXIT_USAGE, ConfgenError, Problem

Redis = Literal["in-cluster", "external", "none"]
Postgres = Literal["external", "in-cluster"]
Edge = Literal["ingress", "gateway-api", "none"]

# RFC 1123 label (namespaces) and subdomain (host names, Secret names).
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# An image tag (Docker's grammar).
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SIZE = re.compile(r"^[1-9][0-9]*(Ki|Mi|Gi|Ti)$")


def default_tag() -> str:
    """Images are tagged with confgen's version: a pinned tag, never `latest`."""
    try:
        return version("confgen")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class K8sOptions:
    namespace: str = "llm"
    # Per model name: how many vLLM pods (each with its own GPUs). Unlisted models get 1.
    replicas: dict[str, int] = field(default_factory=dict)
    gateway_replicas: int = 2
    gateway_max_replicas: int = 6
    # Image names are those of the Docker deployment (docker-compose.yml), under `registry`.
    registry: str = ""
    tag: str = field(default_factory=default_tag)
    redis: Redis = "in-cluster"
    postgres: Postgres = "external"
    edge: Edge = "ingress"
    host: str | None = None
    ingress_class: str | None = None
    model_paths: bool = False
    # Gateway API: the Gateway the HTTPRoutes attach to, "name" or "namespace/name".
    gateway_parent: str = "confgen"
    storage_class: str | None = None
    shm_size: str = "16Gi"

    def image(self, name: str) -> str:
        prefix = f"{self.registry.rstrip('/')}/" if self.registry else ""
        return f"{prefix}confgen/{name}:{self.tag}"

    def replicas_of(self, model: str) -> int:
        return self.replicas.get(model, 1)

    def fqdn(self, service: str) -> str:
        return f"{service}.{self.namespace}.svc.cluster.local"

    def check(self, models: list[str]) -> None:
        """Usage errors (exit 2), all at once."""
        problems: list[tuple[str, str, str]] = []
        if not _LABEL.match(self.namespace):
            problems.append(("--namespace", f"{self.namespace!r} is not a namespace name",
                             "lowercase letters, digits and '-', at most 63 characters"))
        unknown = sorted(set(self.replicas) - set(models))
        if unknown:
            problems.append(("--replicas", f"names models not selected: {', '.join(unknown)}",
                             f"use one of: {', '.join(models)}"))
        if self.gateway_replicas > 1 and self.redis == "none":
            problems.append(("--redis none", f"{self.gateway_replicas} gateway replicas would each count limits "
                             "on their own", "keep --redis in-cluster (or external), or --gateway-replicas 1"))
        if self.gateway_max_replicas < self.gateway_replicas:
            problems.append(("--gateway-max-replicas", f"{self.gateway_max_replicas} is below --gateway-replicas "
                             f"{self.gateway_replicas}", "raise it"))
        if not _TAG.match(self.tag) or self.tag == "latest":
            problems.append(("--tag", f"{self.tag!r} is not a pinned image tag",
                             "use a version such as 0.1.0 (never latest)"))
        if self.host is not None and not _SUBDOMAIN.match(self.host):
            problems.append(("--host", f"{self.host!r} is not a DNS name", "e.g. llm.example.com"))
        if not _SIZE.match(self.shm_size):
            problems.append(("--shm-size", f"{self.shm_size!r} is not a size", "e.g. 16Gi (Ki, Mi, Gi or Ti)"))
        if self.model_paths and self.edge != "gateway-api":
            problems.append(("--model-paths", "per-model paths rewrite /<model>/v1/... to the gateway's "
                             "/openai/deployments/<name>/...; an Ingress cannot rewrite paths without "
                             "controller-specific annotations", "add --edge gateway-api (HTTPRoute)"))
        if problems:
            raise ConfgenError([Problem(*p) for p in problems], EXIT_USAGE)
