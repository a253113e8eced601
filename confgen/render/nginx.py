"""nginx.conf for the HTTPS gateway (template: confgen/templates/nginx.conf.j2, shipped as package data).

Routes: /health and GET /v1/models (the catalog of path endpoints) are answered by nginx; /v1/... goes
to the LiteLLM gateway; /<model>/v1/... is the model's own path. By default a model path goes through
the gateway too (LiteLLM's Azure-style /openai/deployments/<name>/... routes, where the path picks the
model whatever the body says), so it needs a key and limits and usage apply. With public_paths it goes
straight to the model's vLLM with no client key: nginx adds the vLLM key from a 0600 file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from confgen.atomic import write_atomic
from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.merge import ResolvedModel
from confgen.render.secret_values import refuse_secret_values

CONF_FILE = "nginx.conf"
AUTH_FILE = "vllm-auth.conf"
# The routes LiteLLM serves per deployment (the path names the model); other model paths are 404.
DEPLOYMENT_APIS = ("chat/completions", "completions", "embeddings")
MAX_BODY = "32m"
# Seed 000's 30 minutes; longer if a model's own timeout is, so the gateway's error (not nginx's
# 504) is what a client sees when a generation runs too long.
MIN_TIMEOUT_S = 1800
# Characters that need no quoting anywhere in nginx's syntax or in JSON (no quotes, $, ;, {, spaces).
_PLAIN = re.compile(r"^[A-Za-z0-9._:/-]+$")
_ANY_ADDRESS = {"0.0.0.0", "::"}  # noqa: S104 - compared, not bound


@dataclass(frozen=True)
class NginxOptions:
    certs: Path
    https_port: int = 443
    http_port: int = 80
    listen: str = "127.0.0.1"
    public_paths: bool = False
    max_conn_per_ip: int = 64

    @property
    def cert(self) -> Path:
        return self.certs / "server.crt"

    @property
    def key(self) -> Path:
        return self.certs / "server.key"

    def base_url(self, model: str) -> str:
        """Where a client on this machine reaches a model's path."""
        host = "127.0.0.1" if self.listen in _ANY_ADDRESS else self.listen
        host = f"[{host}]" if ":" in host else host
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{host}{port}/{model}/v1"


@dataclass(frozen=True)
class Route:
    """One model's path: /<name>/v1/..."""

    name: str
    served_name: str
    address: str  # host:port of its vLLM
    upstream: str

    @property
    def prefix(self) -> str:
        return f"/{self.name}"

    @property
    def catalog(self) -> str:
        return _catalog([self])


def render(selection: Selection, options: NginxOptions | None = None) -> dict[str, str]:
    options = options or NginxOptions(certs=selection.project.root / "certs")
    _check_options(selection, options)
    routes = [_route(m) for m in selection.models]
    settings = selection.gvars.settings
    timeout = max([MIN_TIMEOUT_S, *(int(m.limits.timeout) + 60 for m in selection.models)])
    text = _template().render(
        routes=routes, public=options.public_paths, auth_file=AUTH_FILE, deployment_apis=DEPLOYMENT_APIS,
        catalog=_catalog(routes), gateway=_address(settings.LITELLM_HOST, settings.LITELLM_PORT),
        listen=_listen(options.listen), http_port=options.http_port, https_port=options.https_port,
        https_suffix="" if options.https_port == 443 else f":{options.https_port}",
        cert=_plain(str(options.cert.resolve()), "--certs"), key=_plain(str(options.key.resolve()), "--certs"),
        max_conn=options.max_conn_per_ip, max_body=MAX_BODY, timeout=timeout,
    )
    return {CONF_FILE: text}


def write(selection: Selection, options: NginxOptions, out: Path, vllm_key: str | None = None) -> list[Path]:
    """nginx.conf (and, for public paths, the 0600 file with the vLLM key) plus the logs/ and tmp/
    folders that `nginx -p <out>` writes to."""
    files = render(selection, options)
    refuse_secret_values(selection.project, files, "keep secrets out of model names and paths")
    written = []
    for name, text in files.items():
        write_atomic(out / name, text)  # 0600: nginx's master process reads it, as it reads AUTH_FILE
        written.append(out / name)
    if options.public_paths:
        if not vllm_key:
            raise ConfgenError.one("--public-paths", "needs the vLLM API key", "write secrets/VLLM_API_KEY")
        write_atomic(out / AUTH_FILE, f'proxy_set_header Authorization "Bearer {vllm_key}";\n', mode=0o600)
        written.append(out / AUTH_FILE)
    else:
        (out / AUTH_FILE).unlink(missing_ok=True)  # a key left from an earlier public render
    for folder in ("logs", "tmp"):
        (out / folder).mkdir(exist_ok=True)
    return written


def _template() -> jinja2.Template:
    env = jinja2.Environment(  # noqa: S701 - renders an nginx config, not HTML
        loader=jinja2.PackageLoader("confgen", "templates"), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )
    return env.get_template("nginx.conf.j2")


def _route(m: ResolvedModel) -> Route:
    netloc = urlsplit(m.api_base).netloc
    upstream = "vllm_" + re.sub(r"[^A-Za-z0-9]", "_", m.name)
    return Route(name=_plain(m.name, m.file), served_name=_plain(m.served_name, f"{m.file}: serve.served_name"),
                 address=netloc, upstream=upstream)


def _catalog(routes: list[Route]) -> str:
    """Seed 000's /v1/models: each model's id (the name to send) and its path endpoint."""
    data = [{"id": r.served_name, "object": "model", "endpoint": f"{r.prefix}/v1/chat/completions"}
            for r in routes]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":"))


def _address(host: str, port: int) -> str:
    host = "127.0.0.1" if host in _ANY_ADDRESS or not host else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _plain(value: str, where: str) -> str:
    if not _PLAIN.match(value):
        raise ConfgenError.one(where, f"{value!r} cannot be written into the nginx config",
                               "use only letters, digits and . _ : / -")
    return value


def _check_options(selection: Selection, options: NginxOptions) -> None:
    try:
        ipaddress.ip_address(options.listen)
    except ValueError:
        raise ConfgenError.one("--listen", f"{options.listen!r} is not an IP address",
                               "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
                               exit_code=2) from None
    if options.https_port == options.http_port:
        raise ConfgenError.one("--http-port", f"the same port as --https-port ({options.https_port})",
                               "give HTTP (the redirect) its own port", exit_code=2)
    taken = {selection.gvars.settings.LITELLM_PORT: "the LiteLLM gateway (LITELLM_PORT)"}
    taken |= {m.port: f"vLLM of {m.name}" for m in selection.models}
    for flag, port in (("--https-port", options.https_port), ("--http-port", options.http_port)):
        if port in taken:
            raise ConfgenError.one(flag, f"port {port} is the port of {taken[port]}", "pick another port",
                                   exit_code=2)
