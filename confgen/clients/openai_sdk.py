"""The OpenAI SDK (and anything that reads OPENAI_BASE_URL / OPENAI_API_KEY): base URL /v1 on the gateway."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from confgen.clients.endpoint import Endpoint
from confgen.clients.output import ClientConfig

NAME = "openai"


def snippet(ep: Endpoint) -> str:
    model = ep.default
    key = repr(ep.key.value) if ep.key.value is not None else f"open({str(ep.key.path)!r}).read().strip()"
    head = ["from openai import OpenAI", ""]
    extra = ""
    if ep.ca_file is not None:
        head = ["import ssl", "", "import httpx", "from openai import OpenAI", ""]
        extra = (",\n                http_client=httpx.Client(verify=ssl.create_default_context("
                 f"cafile={str(ep.ca_file)!r}))")
    return "\n".join([
        *head,
        f"client = OpenAI(base_url={ep.openai_base!r}, api_key={key}{extra})",
        f"reply = client.chat.completions.create(model={model.name!r}, max_tokens={model.max_output},",
        '                                       messages=[{"role": "user", "content": "Hello"}])',
        "print(reply.choices[0].message.content)",
    ]) + "\n"


def config(ep: Endpoint, environ: Mapping[str, str]) -> ClientConfig:
    model = ep.default
    shell = [f"export OPENAI_BASE_URL={shlex.quote(ep.openai_base)}", f"export OPENAI_API_KEY={ep.key.shell}"]
    if ep.ca_file is not None:
        shell.append(f"export SSL_CERT_FILE={shlex.quote(str(ep.ca_file))}")
    notes = (f"Key: {ep.key.label}.",
             f"{model.name}: context {model.context or 'not set'} tokens, max output {model.max_output} "
             "(the catalog's default when a request sets none).",
             "Anthropic SDK: base_url without /v1, auth_token = the same key.")
    return ClientConfig(NAME, shell=tuple(shell), snippets=(("python", snippet(ep)),), notes=notes,
                        write_hint="the OpenAI SDK has no configuration file: use the printed environment or code")
