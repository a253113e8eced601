"""Which model a request addresses, read the way LiteLLM 1.108.7 serves it: the one answer that auth, the
model list of a key and its limits all use.

LiteLLM dispatches on the route FastAPI matched (`scope["route"]`), and its handlers take the model from
the PATH before the body: `/openai/deployments/{model}/chat/completions` and `/engines/{model}/...` are
served by `{model}` whatever `body.model` says (`litellm.proxy.common_utils.http_parsing_utils.
resolve_inference_model`, called by `common_request_processing.py` with the path parameter as
`endpoint_model`). So the model is resolved here with that same function, from the same path parameter
and the same parsed body (`read_request_body`, which caches what it parsed for the handler).

API keys may call only the routes in ROUTES: the inference routes our vLLM deployments serve (each must
address one served model) and the model listings. Every other route LiteLLM mounts (files, batches,
assistants, provider pass-throughs, Google-style `/v1beta/models/{model}:generateContent`, ...) is for
the master key only: each resolves its model its own way, and we serve none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import litellm
import orjson
from fastapi import Request
from litellm.proxy._types import ProxyException
from litellm.proxy.auth.auth_utils import get_request_route, get_request_route_template
from litellm.proxy.common_utils.http_parsing_utils import read_request_body, resolve_inference_model

from confgen.gateway import proxyinfo
from confgen.keys.record import MODEL_PATTERN

Kind = Literal["inference", "listing"]
_INFERENCE: Final = ("chat/completions", "completions", "embeddings")
# Route template (as FastAPI matched it) -> what it is. The inference routes LiteLLM serves per deployment
# (proxy_server.py: chat_completion, completion, embeddings), and the Anthropic and Responses routes.
ROUTES: Final[dict[str, Kind]] = {
    **{f"{prefix}{endpoint}": "inference" for endpoint in _INFERENCE
       for prefix in ("/v1/", "/", "/engines/{model:path}/", "/openai/deployments/{model:path}/")},
    "/v1/messages": "inference",
    "/v1/messages/count_tokens": "inference",
    "/v1/responses": "inference",
    "/responses": "inference",
    "/openai/v1/responses": "inference",
    "/v1/models": "listing",
    "/models": "listing",
    "/v1/models/{model_id}": "listing",
    "/models/{model_id}": "listing",
}
# Route templates the master key may call besides ROUTES: the health checks, our metrics, the model and
# route information that works without LiteLLM's own database, and the API description. Every other route
# LiteLLM mounts needs its Prisma database (keys, teams, spend, UI, MCP, guardrails, prompts...), which this
# stack does not run, or sends the request to a cloud provider we do not configure (files, batches, vector
# stores, assistants, videos, pass-throughs to api.openai.com, Vertex, Bedrock...): 404 for the master key
# too, so that nothing leaves the box and no route answers a 500 for a feature that is not there
# (tests/e2e/test_security_routes.py fuzzes both keys).
MASTER_ROUTES: Final = frozenset({
    "/health", "/health/readiness", "/health/liveliness", "/health/liveness", "/health/services",
    "/metrics", "/metrics/",
    "/model/info", "/v1/model/info", "/model_group/info", "/v1/model_group/info", "/routes",
    "/utils/token_counter", "/openapi.json", "/docs", "/redoc",
})
# Body fields that cap a completion, by API: OpenAI chat/completions, Anthropic messages, Responses.
_MAX_TOKENS_FIELDS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# Prompt fields, by API; their JSON size / CHARS_PER_TOKEN over-estimates the tokens of typical text.
_PROMPT_FIELDS: Final = ("messages", "prompt", "input", "system", "tools", "instructions")
CHARS_PER_TOKEN: Final = 3
# Tokens a chat template adds around the messages (role markers, a generation prompt): an allowance.
TEMPLATE_TOKENS: Final = 16


class NotAddressable(Exception):
    """A request an API key may not send as it is: `status` 400 or 403, a message that says what to do."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Addressed:
    route: str  # the template FastAPI matched, e.g. /openai/deployments/{model:path}/chat/completions
    kind: Kind
    model: str | None  # inference: the model group LiteLLM will route to; listing: /v1/models/{id} or None
    body: dict[str, Any]

    def reservation(self, default_max_tokens: int | None) -> int:
        """The worst case of this request's tokens: an over-estimate of its prompt plus its completion cap
        (the request's own, else the model's default). Settled to the real usage when it ends."""
        if self.kind != "inference":
            return 0
        prompt = sum(len(orjson.dumps(self.body[f], default=str)) for f in _PROMPT_FIELDS if f in self.body)
        cap = next((v for f in _MAX_TOKENS_FIELDS if isinstance(v := self.body.get(f), int) and v > 0), None)
        completion = 0 if self.route.endswith("embeddings") or self.route.endswith("count_tokens") else (
            cap or default_max_tokens or 0)
        return math.ceil(prompt / CHARS_PER_TOKEN) + TEMPLATE_TOKENS + completion


def _aliased(model: str) -> str:
    """The model group the router serves for `model`: LiteLLM's alias map, then the router's group aliases."""
    model = litellm.model_alias_map.get(model, model) if isinstance(litellm.model_alias_map, dict) else model
    aliases = proxyinfo.group_aliases()
    target = aliases.get(model)
    if isinstance(target, dict):
        target = target.get("model")
    return target if isinstance(target, str) and target else model


def group_of(model: str) -> str | None:
    """The model group `model` names (aliases resolved), or None when it is not one model name."""
    return _aliased(model) if "," not in model and MODEL_PATTERN.fullmatch(model) else None


def route_of(request: Request) -> tuple[str, Kind | None]:
    """(the route as shown to users, its kind here or None: not open to API keys)."""
    template = get_request_route_template(request)
    return template or get_request_route(request), ROUTES.get(template or "")


async def addressed(request: Request) -> Addressed:
    """The model the request addresses on a route open to API keys; NotAddressable when it addresses none,
    several, or one that is not a model name."""
    route, kind = route_of(request)
    if kind is None:
        raise NotAddressable(403, "route_not_allowed", f"Only the master key may call {route}: API keys may call "
                             "the chat, completions, embeddings, messages and responses routes and /v1/models")
    if kind == "listing":
        model_id = request.path_params.get("model_id")
        return Addressed(route, kind, model_id if isinstance(model_id, str) else None, {})
    try:
        body = await read_request_body(request) if request.method == "POST" else {}
    except ProxyException as exc:  # LiteLLM's own parser refuses the body (not JSON, lone surrogates)
        raise NotAddressable(400, "invalid_body", f"{route}: {exc.message}") from None
    body = body if isinstance(body, dict) else {}
    path_model = request.path_params.get("model")
    settings, user_model = proxyinfo.request_settings()
    model = resolve_inference_model(body.get("model"), settings, user_model, path_model or None)
    if model is None or model == "":
        raise NotAddressable(400, "model_missing", f"{route} needs a model: send \"model\" in the JSON body, or "
                             "use /openai/deployments/<model>/chat/completions")
    if not isinstance(model, str):
        raise NotAddressable(400, "model_invalid", f"\"model\" must be one model name (a string), got "
                             f"{type(model).__name__}")
    if "," in model:
        # LiteLLM answers "a,b" with a batch across several models (route_llm_request.py): one key check
        # per model would be needed; served names never hold a comma (confgen/keys/record.py MODEL_PATTERN).
        raise NotAddressable(400, "model_invalid", f"\"model\" must be one model name, got {model!r}")
    if not MODEL_PATTERN.fullmatch(model):
        raise NotAddressable(400, "model_invalid", f"{model[:80]!r} is not a model name: use a name that "
                             "GET /v1/models lists")
    return Addressed(route, kind, _aliased(model), body)
