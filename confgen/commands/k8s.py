"""confgen k8s: Kubernetes manifests (base + kustomize overlays dev/prod) for a selection of the catalog."""

from __future__ import annotations

import os
from pathlib import Path

import click

from confgen.catalog import select
from confgen.commands import model_option, project_from
from confgen.render import k8s
from confgen.render.k8s.options import Edge, Postgres, Redis, default_tag


def _replicas(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        name, eq, count = value.partition("=")
        if not eq or not name or not count.isdigit() or not 1 <= int(count) <= 64:
            raise click.BadParameter(f"{value!r}: expected NAME=COUNT with COUNT 1-64, e.g. glm47-flash=2")
        out[name] = int(count)
    return out


@click.command("k8s")
@model_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for base/, overlays/dev, overlays/prod and README.md (created if missing).")
@click.option("--namespace", default="llm", show_default=True, help="Namespace of every object.")
@click.option("--replicas", "replicas", multiple=True, callback=_replicas, metavar="NAME=COUNT",
              help="vLLM pods for a model (each with its own GPUs); repeat per model. Default 1.")
@click.option("--gateway-replicas", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Gateway pods (HPA minimum); more than 1 needs Redis.")
@click.option("--gateway-max-replicas", type=click.IntRange(1, 256), default=6, show_default=True,
              help="HPA maximum for the gateway (CPU 70%).")
@click.option("--registry", default="", show_default="none (the local image names)",
              help="Registry prefix of the images, e.g. registry.example.com/team.")
@click.option("--tag", default=default_tag, show_default="confgen's version",
              help="Tag of the confgen/gateway, confgen/vllm-node and confgen/vllm-node-cpu images.")
@click.option("--redis", type=click.Choice(["in-cluster", "external", "none"]), default="in-cluster",
              show_default=True, help="Redis for limits shared by the gateway replicas (external: Secret "
              "confgen-redis, key REDIS_URL).")
@click.option("--postgres", type=click.Choice(["external", "in-cluster"]), default="external", show_default=True,
              help="external: Secret confgen-database (key DATABASE_URL); in-cluster: a StatefulSet with a PVC.")
@click.option("--edge", type=click.Choice(["ingress", "gateway-api", "none"]), default="ingress", show_default=True,
              help="HTTPS entry: an Ingress (TLS Secret confgen-tls) or Gateway API HTTPRoutes.")
@click.option("--host", default=None, help="Public host name of the gateway (Ingress rule / HTTPRoute hostname).")
@click.option("--ingress-class", default=None, help="ingressClassName of the Ingress (default: the cluster's).")
@click.option("--model-paths", is_flag=True,
              help="Also /<model>/v1/{chat/completions,completions,embeddings} per model (needs --edge gateway-api).")
@click.option("--gateway-parent", default="confgen", show_default=True, metavar="[NAMESPACE/]NAME",
              help="The Gateway the HTTPRoutes attach to.")
@click.option("--storage-class", default=None, help="StorageClass of the PVCs (default: the cluster's).")
@click.option("--shm-size", default="16Gi", show_default=True,
              help="Shared memory (a memory emptyDir on /dev/shm) of each GPU vLLM pod.")
@click.pass_context
def command(ctx: click.Context, *, models: tuple[str, ...], out: Path, namespace: str, replicas: dict[str, int],
            gateway_replicas: int, gateway_max_replicas: int, registry: str, tag: str, redis: Redis,
            postgres: Postgres, edge: Edge, host: str | None, ingress_class: str | None,
            model_paths: bool, gateway_parent: str, storage_class: str | None, shm_size: str) -> int:
    """Write Kubernetes manifests: per model a vLLM Deployment, Service, PVC and ConfigMap; the gateway
    (Deployment, HPA, PDB, its LiteLLM config routing to the model Services); Redis; PostgreSQL or a
    reference to yours; NetworkPolicies; the HTTPS entry. Secrets are referenced, never written."""
    project = project_from(ctx)
    selection = select(project, list(models), dict(os.environ))
    options = k8s.K8sOptions(
        namespace=namespace, replicas=replicas, gateway_replicas=gateway_replicas,
        gateway_max_replicas=gateway_max_replicas, registry=registry, tag=tag, redis=redis, postgres=postgres,
        edge=edge, host=host, ingress_class=ingress_class, model_paths=model_paths, gateway_parent=gateway_parent,
        storage_class=storage_class, shm_size=shm_size)
    for path in k8s.write(selection, options, out):
        click.echo(f"wrote {path}")
    click.echo(f"next: create the Secrets listed in {out / 'README.md'}, then kubectl apply -k {out / 'overlays/prod'}")
    return 0
