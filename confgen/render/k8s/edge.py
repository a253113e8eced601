"""Who may talk to whom (NetworkPolicies: only the gateway reaches vLLM, Redis and PostgreSQL) and the
HTTPS entry: an Ingress, or Gateway API HTTPRoutes, which can also give each model its own path."""

from __future__ import annotations

from confgen.catalog import Selection
from confgen.render.k8s import gateway, meta, vllm
from confgen.render.k8s.meta import Obj
from confgen.render.k8s.options import K8sOptions
from confgen.render.k8s.secrets import TLS
from confgen.render.nginx import DEPLOYMENT_APIS

GATEWAY_PODS = {"podSelector": {"matchLabels": meta.selector(gateway.NAME, meta.GATEWAY)}}


def network_policies(selection: Selection, options: K8sOptions) -> list[Obj]:
    ns = options.namespace
    labels = meta.labels("confgen", "network-policy", "network-policy")
    docs = [{**meta.obj("networking.k8s.io/v1", "NetworkPolicy", "default-deny-ingress", ns, labels),
             "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]

    def allow(name: str, pods: dict[str, str], port: int | str, sources: list[Obj]) -> Obj:
        rule: Obj = {"ports": [{"protocol": "TCP", "port": port}]}
        if sources:
            rule["from"] = sources
        return {**meta.obj("networking.k8s.io/v1", "NetworkPolicy", name, ns, labels),
                "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"], "ingress": [rule]}}

    for m in selection.models:
        service = meta.model_service(m.name)
        docs.append(allow(f"{service}-from-gateway", meta.selector(vllm.NAME, service), m.port, [GATEWAY_PODS]))
    # The gateway takes client traffic from the ingress controller or Gateway, wherever it runs: narrow
    # `from` to its namespace in an overlay if the cluster's CNI enforces policies across namespaces.
    docs.append(allow("gateway-from-clients", meta.selector(gateway.NAME, meta.GATEWAY),
                      gateway.port(selection), []))
    if options.redis == "in-cluster":
        docs.append(allow("redis-from-gateway", meta.selector("redis", meta.REDIS), 6379, [GATEWAY_PODS]))
    if options.postgres == "in-cluster":
        docs.append(allow("postgres-from-gateway", meta.selector("postgresql", meta.POSTGRES), 5432,
                          [GATEWAY_PODS]))
    return docs


def _backend(selection: Selection) -> Obj:
    return {"name": meta.GATEWAY, "port": gateway.port(selection)}


def ingress(selection: Selection, options: K8sOptions) -> list[Obj]:
    labels = meta.labels(gateway.NAME, meta.GATEWAY, gateway.COMPONENT, options.tag)
    path = {"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": meta.GATEWAY, "port": {"name": "http"}}}}
    rule: Obj = {"http": {"paths": [path]}}
    tls: Obj = {"secretName": TLS.name}
    if options.host:
        rule = {"host": options.host, **rule}
        tls["hosts"] = [options.host]
    spec: Obj = {"tls": [tls], "rules": [rule]}
    if options.ingress_class:
        spec = {"ingressClassName": options.ingress_class, **spec}
    # No controller annotations (ingress-nginx is retired): streams need the controller's read timeout
    # above 300 s and response buffering off, set in its own configuration.
    return [{**meta.obj("networking.k8s.io/v1", "Ingress", meta.GATEWAY, options.namespace, labels), "spec": spec}]


def _parent(options: K8sOptions) -> Obj:
    namespace, _, name = options.gateway_parent.rpartition("/")
    ref: Obj = {"name": name}
    if namespace:
        ref["namespace"] = namespace
    return ref


def http_routes(selection: Selection, options: K8sOptions) -> list[Obj]:
    """One route for /v1/... (everything) and, with model_paths, one per model: /<model>/v1/<api> is
    rewritten to the gateway's /openai/deployments/<served name>/<api>, where the path picks the model
    whatever the body says; the client's gateway key is checked as on every route (confgen nginx's
    default design)."""
    labels = meta.labels(gateway.NAME, meta.GATEWAY, gateway.COMPONENT, options.tag)
    common: Obj = {"parentRefs": [_parent(options)]}
    if options.host:
        common["hostnames"] = [options.host]
    api = "gateway.networking.k8s.io/v1"
    root = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [_backend(selection)]}
    docs = [{**meta.obj(api, "HTTPRoute", meta.GATEWAY, options.namespace, labels),
             "spec": {**common, "rules": [root]}}]
    if not options.model_paths:
        return docs
    for m in selection.models:
        rules = [{"matches": [{"path": {"type": "PathPrefix", "value": f"/{m.name}/v1/{route}"}}],
                  "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                      "type": "ReplacePrefixMatch",
                      "replacePrefixMatch": f"/openai/deployments/{m.served_name}/{route}"}}}],
                  "backendRefs": [_backend(selection)]}
                 for route in DEPLOYMENT_APIS]
        name = f"{meta.model_service(m.name)}-path"
        docs.append({**meta.obj(api, "HTTPRoute", name, options.namespace, labels), "spec": {**common, "rules": rules}})
    return docs
