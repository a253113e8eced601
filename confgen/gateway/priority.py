"""A key's priority in the request vLLM gets: the body's `priority` (vLLM's ChatCompletionRequest and
CompletionRequest, vllm/entrypoints/openai/chat_completion/protocol.py: "lower means earlier handling; default:
0"), set only for models whose command has `--scheduling-policy priority`, since vLLM refuses any other value
than 0 there. The model file's flag reaches the gateway as model_info.confgen_priority_scheduling
(litellm_config.template.yaml). An API key's priority replaces one the client sent: a client cannot jump the queue.

Both of the gateway's paths forward the parsed body that custom_auth saw: LiteLLM's cache of it
(request.scope["parsed_body"], litellm/proxy/common_utils/http_parsing_utils.py, whose key tuple filters it)
and the relay lane's body (confgen/gateway/lanerun.py), the same dict. The relay lane sends the body as it is:
`priority` goes in at the top. LiteLLM's Router takes a top-level `priority` for its own request scheduler and
does not send it on (litellm/router.py: acompletion -> schedule_acompletion(priority=...)), so on LiteLLM's path
it goes in `extra_body`, which LiteLLM merges into the body it sends; a request's extra_body replaces the
deployment's (router.py _acompletion: {**litellm_params, **kwargs}), so the model's own extra_body (top_k,
repetition_penalty: litellm_config.template.yaml) is carried over. LiteLLM's path is told apart by the
`endpoint` its routing sets in the scope (starlette/routing.py Route.matches); the lane authenticates before
routing.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from confgen.gateway import proxyinfo

MARK = "confgen_priority_scheduling"
# The OpenAI routes whose vLLM request has `priority` (the Anthropic and Responses shapes differ per vLLM version).
ROUTES = ("chat/completions", "completions")
_cache: tuple[int, int, dict[str, dict[str, Any]]] | None = None


def scheduled_models(model_list: Any) -> dict[str, dict[str, Any]]:
    """The model groups whose deployments are marked for priority scheduling, each with its deployments'
    extra_body (one model file: the same for every replica)."""
    found: dict[str, dict[str, Any]] = {}
    for d in model_list or ():
        if isinstance(d, dict) and isinstance(d.get("model_info"), dict) and d["model_info"].get(MARK):
            extra = (d.get("litellm_params") or {}).get("extra_body")
            found.setdefault(str(d.get("model_name")), dict(extra) if isinstance(extra, dict) else {})
    return found


def _scheduled() -> dict[str, dict[str, Any]]:
    global _cache  # noqa: PLW0603 - per process, recomputed when the router's model list changes
    model_list = getattr(proxyinfo.router(), "model_list", None) or []
    stamp = (id(model_list), len(model_list))
    if _cache is None or _cache[:2] != stamp:
        _cache = (*stamp, scheduled_models(model_list))
    return _cache[2]


def scheduled(model: str) -> dict[str, Any] | None:
    """The model's extra_body when it is priority-scheduled, else None."""
    return _scheduled().get(model)


def any_scheduled() -> bool:
    return bool(_scheduled())


def apply(request: Request, route: str, model: str | None, priority: int | None, *, keep_sent: bool = False) -> bool:
    """Put the key's priority (None: 0) into the body of a request for a priority-scheduled model; True if set.
    `keep_sent` (the master key): the priority the request sent, if any, instead."""
    extra = scheduled(model) if model is not None and route.rstrip("/").endswith(ROUTES) else None
    parsed = request.scope.get("parsed_body")
    if extra is None or not (isinstance(parsed, tuple) and len(parsed) == 2 and isinstance(parsed[1], dict)):
        return False
    keys, body = parsed
    sent_priority = body.get("priority")
    if keep_sent and isinstance(sent_priority, int) and not isinstance(sent_priority, bool):
        priority = sent_priority
    if "endpoint" in request.scope:  # LiteLLM's path
        body.pop("priority", None)
        sent = body.get("extra_body")
        body["extra_body"] = {**extra, **(sent if isinstance(sent, dict) else {}), "priority": priority or 0}
        field = "extra_body"
    else:
        body["priority"] = priority or 0
        field = "priority"
    request.scope["parsed_body"] = (tuple(k for k in keys if k in body) + ((field,) if field not in keys else ()),
                                    body)
    return True
