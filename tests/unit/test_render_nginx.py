"""confgen nginx (confgen.render.nginx, confgen.commands.nginx): the structure of the rendered config,
the CLI's exact output, and the refusals. `nginx -t` on these configs runs in tests/e2e/test_nginx.py.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from confgen.catalog import select
from confgen.load import Project
from confgen.render.nginx import NginxOptions, render

RunCli = Callable[..., Result]
WriteModel = Callable[[str, Any], Path]
WriteSecret = Callable[[str, str], Path]
VLLM_KEY = "sk-vllm-0123456789abcdef"
# The directives that make the routing: anything else is tuning, checked on its own below.
_SHAPE = re.compile(r"^\s*(?:upstream|server(?! \{)|listen|location|proxy_pass|return|include|limit_conn|error_page)\s")


def shape(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if _SHAPE.match(line)]


def conf(out: Path) -> str:
    return (out / "nginx.conf").read_text(encoding="utf-8")


def two_models(write_model: WriteModel, tiny_doc: dict[str, Any]) -> None:
    tiny_doc["serve"] = {"port": 8001, "served_name": "Big/Model-7B"}
    tiny_doc["command"] = "vllm serve Big/Model-7B --max-model-len 4096"
    tiny_doc["litellm"]["timeout"] = 3600
    write_model("big", tiny_doc)


CATALOG_ROUTE = (
    "return 200 '{\"object\":\"list\",\"data\":[{\"id\":\"tiny-cpu\",\"object\":\"model\","
    "\"endpoint\":\"/tiny-cpu/v1/chat/completions\"}]}';"
)
COMMON_HEAD = [
    "upstream litellm {",
    "server 127.0.0.1:4000;",
]
SERVERS = [
    "listen 127.0.0.1:18080 default_server;",
    "limit_conn per_ip 64;",
    "location / {",
    "return 301 https://$host:18443$request_uri;",
    "listen 127.0.0.1:18443 ssl default_server;",
    "limit_conn per_ip 64;",
    "error_page 413 @too_large;",
    "error_page 429 @too_many;",
    "error_page 502 503 504 @unavailable;",
    "location = /health {",
    'return 200 "healthy\\n";',
    "location = /v1/models {",
    CATALOG_ROUTE,
    "location /v1/ {",
    "proxy_pass http://litellm;",
    "location = /tiny-cpu/v1/models {",
    CATALOG_ROUTE,
]
TAIL = [
    "location / {",
    "return 404 '{\"error\":{\"message\":\"no such route: GET /v1/models lists the models and their paths\","
    "\"type\":\"not_found\",\"code\":404}}';",
    "location @too_large {",
    "return 413 '{\"error\":{\"message\":\"request body larger than 32m\",\"type\":\"too_large\",\"code\":413}}';",
    "location @too_many {",
    "return 429 '{\"error\":{\"message\":\"too many connections from your address\",\"type\":\"rate_limit\","
    "\"code\":429}}';",
    "location @unavailable {",
    "return 502 '{\"error\":{\"message\":\"the model server did not answer (down, starting or too slow): try again "
    "shortly\",\"type\":\"unavailable\",\"code\":502}}';",
]


def test_default_routes_model_paths_through_the_gateway(run_cli: RunCli, project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(out), "--https-port", "18443",
                     "--http-port", "18080", "--certs", str(tmp_path / "certs"))
    assert result.exit_code == 0
    assert result.stdout == (
        f"wrote {out}/nginx.conf\n"
        "per-model paths go through the LiteLLM gateway: clients send a gateway key.\n"
        "  https://127.0.0.1:18443/tiny-cpu/v1  ->  tiny-cpu\n"
        f"run: nginx -p {out} -c nginx.conf   (check it first with nginx -t and the same flags)\n"
    )
    assert result.stderr == (
        f"note: {tmp_path}/certs/server.crt is missing: make it with scripts/certs.sh {tmp_path}/certs\n"
        f"note: {tmp_path}/certs/server.key is missing: make it with scripts/certs.sh {tmp_path}/certs\n"
    )
    assert shape(conf(out)) == [*COMMON_HEAD, *SERVERS,
        "location = /tiny-cpu/v1/chat/completions {",
        "proxy_pass http://litellm/openai/deployments/tiny-cpu/chat/completions;",
        "location = /tiny-cpu/v1/completions {",
        "proxy_pass http://litellm/openai/deployments/tiny-cpu/completions;",
        "location = /tiny-cpu/v1/embeddings {",
        "proxy_pass http://litellm/openai/deployments/tiny-cpu/embeddings;",
        *TAIL,
    ]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["logs", "nginx.conf", "tmp"]
    assert "straight to vLLM" not in conf(out)


def test_public_paths_go_straight_to_vllm_and_say_so(
    run_cli: RunCli, write_secret: WriteSecret, tmp_path: Path
) -> None:
    write_secret("VLLM_API_KEY", VLLM_KEY)
    out = tmp_path / "out"
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(out), "--https-port", "18443",
                     "--http-port", "18080", "--certs", str(tmp_path), "--public-paths")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[:3] == [
        f"wrote {out}/nginx.conf",
        f"wrote {out}/vllm-auth.conf (mode 0600: it holds the vLLM API key)",
        "WARNING: --public-paths: /<model>/v1/... goes straight to vLLM with NO client key: anyone who can reach "
        "this server can use these models; no gateway key, limit or usage record applies.",
    ]
    text = conf(out)
    assert "# PUBLIC PATHS (--public-paths): /<model>/v1/... goes STRAIGHT TO vLLM WITH NO CLIENT KEY." in text
    assert shape(text) == [*COMMON_HEAD,
        "upstream vllm_tiny_cpu {",
        "server 127.0.0.1:8000;",
        *SERVERS,
        "location /tiny-cpu/v1/ {",
        "proxy_pass http://vllm_tiny_cpu/v1/;",
        "include vllm-auth.conf;",
        *TAIL,
    ]  # fmt: skip
    auth = out / "vllm-auth.conf"
    assert auth.read_text() == f'proxy_set_header Authorization "Bearer {VLLM_KEY}";\n'
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert VLLM_KEY not in text
    # Rendering again without the flag removes the key file.
    assert run_cli("nginx", "--model", "tiny-cpu", "--out", str(out), "--certs", str(tmp_path)).exit_code == 0
    assert not auth.exists()


def test_public_paths_need_the_vllm_key(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(tmp_path / "o"), "--public-paths")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: secrets/VLLM_API_KEY: missing secret (write the value to secrets/VLLM_API_KEY (mode 0600))\n"
    )
    assert not (tmp_path / "o").exists()


def test_proxy_settings_for_streaming_and_hardening(project: Project, tmp_path: Path) -> None:
    text = render(select(project, ["tiny-cpu"], {}), NginxOptions(certs=tmp_path))["nginx.conf"]
    lines = [line.strip() for line in text.splitlines()]
    for directive in (
        "server_tokens off;", "client_max_body_size 32m;", "limit_conn_zone $binary_remote_addr zone=per_ip:10m;",
        "limit_conn_status 429;", "keepalive 32;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
        "proxy_buffering off;", "proxy_cache off;", "proxy_connect_timeout 10s;", "proxy_read_timeout 1800s;",
        "proxy_send_timeout 1800s;", "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_session_tickets off;",
        f"ssl_certificate {tmp_path}/server.crt;", f"ssl_certificate_key {tmp_path}/server.key;",
        "pid nginx.pid;", "error_log logs/error.log warn;", "client_body_temp_path tmp/client_body;",
        "proxy_set_header X-Forwarded-For $remote_addr;",  # set, not appended: a client cannot forge it
    ):
        assert directive in lines, directive
    # 443 is HTTPS's own port: the redirect and the URLs leave it out.
    assert "return 301 https://$host$request_uri;" in lines
    assert "listen 127.0.0.1:443 ssl default_server;" in lines
    assert "listen 127.0.0.1:80 default_server;" in lines
    # No distribution site, mime list or files on disk: only the routes above answer.
    assert not [line for line in lines if line.startswith(("include", "root", "alias", "autoindex"))]


def test_catalog_lists_every_model_with_its_path(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], tmp_path: Path
) -> None:
    two_models(write_model, tiny_doc)
    text = render(select(project, ["tiny-cpu", "big"], {}), NginxOptions(certs=tmp_path))["nginx.conf"]
    (catalog,) = re.findall(r"location = /v1/models \{\n.*\n\s*return 200 '(.*)';", text)
    assert json.loads(catalog) == {"object": "list", "data": [
        {"id": "tiny-cpu", "object": "model", "endpoint": "/tiny-cpu/v1/chat/completions"},
        {"id": "Big/Model-7B", "object": "model", "endpoint": "/big/v1/chat/completions"},
    ]}  # fmt: skip
    # The path picks the model: its served name goes into the gateway's deployment route.
    assert "proxy_pass http://litellm/openai/deployments/Big/Model-7B/chat/completions;" in text
    # A model whose own timeout is longer than 30 minutes gets nginx timeouts beyond it.
    assert "proxy_read_timeout 3660s;" in text


def test_ports_and_addresses_follow_the_settings(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], tmp_path: Path
) -> None:
    two_models(write_model, tiny_doc)
    selection = select(project, ["tiny-cpu", "big"], {"LITELLM_PORT": "14700", "LITELLM_HOST": "0.0.0.0"})
    options = NginxOptions(certs=tmp_path, listen="::1", https_port=8443, http_port=8080, public_paths=True)
    text = render(selection, options)["nginx.conf"]
    assert shape(text)[:8] == [
        "upstream litellm {", "server 127.0.0.1:14700;",  # a wildcard bind is reached on loopback
        "upstream vllm_tiny_cpu {", "server 127.0.0.1:8000;",
        "upstream vllm_big {", "server 127.0.0.1:8001;",
        "listen [::1]:8080 default_server;", "limit_conn per_ip 64;",
    ]
    assert options.base_url("big") == "https://[::1]:8443/big/v1"


@pytest.mark.parametrize(("args", "message"), [
    (["--https-port", "8443", "--http-port", "8443"],
     "error: --http-port: the same port as --https-port (8443) (give HTTP (the redirect) its own port)\n"),
    (["--https-port", "4000"],
     "error: --https-port: port 4000 is the port of the LiteLLM gateway (LITELLM_PORT) (pick another port)\n"),
    (["--http-port", "8000"], "error: --http-port: port 8000 is the port of vLLM of tiny-cpu (pick another port)\n"),
    (["--listen", "gateway.local"],
     "error: --listen: 'gateway.local' is not an IP address (use 127.0.0.1 (this machine only) or 0.0.0.0 "
     "(every interface))\n"),
])  # fmt: skip
def test_usage_errors(run_cli: RunCli, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(tmp_path / "o"), *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_a_name_nginx_cannot_hold_is_refused(
    run_cli: RunCli, write_model: WriteModel, tiny_doc: dict[str, Any], tmp_path: Path
) -> None:
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(tmp_path / "o"), "--certs", str(tmp_path / "a b"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: --certs: '{tmp_path}/a b/server.crt' cannot be written into the nginx config "
        "(use only letters, digits and . _ : / -)\n"
    )


def test_a_port_out_of_range_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("nginx", "--model", "tiny-cpu", "--out", str(tmp_path), "--https-port", "70000")
    assert result.exit_code == 2
    assert "Invalid value for '--https-port': 70000 is not in the range 1<=x<=65535." in result.stderr


def test_the_template_ships_as_package_data() -> None:
    template = resources.files("confgen") / "templates" / "nginx.conf.j2"
    assert template.is_file()
    assert "server_tokens off;" in template.read_text(encoding="utf-8")
