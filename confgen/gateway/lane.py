"""The relay lane: vLLM-native requests relayed as bytes, in the gateway process, inside the edge guard
(confgen/gateway/edge.py) and around LiteLLM's app.

LiteLLM turns every streamed vLLM chunk into pydantic objects and back into SSE, and rebuilds each stream twice
for logging (docs/benchmarks.md, "Gateway overhead"): about 1 ms of CPU per chunk. For the routes vLLM serves
itself the gateway has nothing to translate, so the lane takes a request when

- it is a POST on one of lanebody.ROUTES, its JSON body names one model (`model`), and
- that model group's deployments are all `hosted_vllm` and the API is served natively: chat and text
  completions always; /v1/responses unless the model translates it (`use_chat_completions_api`);
  /v1/messages only when the model passes it to vLLM (`supported_endpoints`, litellm.messages_api), and
- the Router picks replicas by weight (`simple-shuffle`, the default): the other strategies learn from
  LiteLLM's logging callbacks, which the lane does not run.

Everything else goes to LiteLLM untouched (the body the lane read is handed on as it came). For the requests
it takes, the lane runs the same code as LiteLLM's path where it matters: our custom_auth
(confgen.gateway.auth.user_api_key_auth, with a Starlette Request: keys, model lists, limits, on-demand holds),
LiteLLM's Router for the replica, retries and fallbacks (confgen/gateway/laneup.py), and our usage callback
(confgen.ledger.logger.usage_logger) for the ledger row, the metrics and the settlement of the key's limits,
exactly once per request. `GET /health` (master key) says which lane serves which model and API.
Turned off by RELAY_LANE=off (vars.env; CONFGEN_RELAY_LANE in the gateway's environment).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Set
from dataclasses import dataclass
from typing import Any, Final

import orjson

from confgen.gateway import proxyinfo
from confgen.gateway.lanebody import ROUTES, Api

log = logging.getLogger("confgen.gateway")
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
LITELLM: Final = "litellm"
RELAY: Final = "relay"
_NATIVE: Final = ("chat", "completion")
ROUTES_RECHECK_S: Final = 30.0


@dataclass(frozen=True)
class Plan:
    """Which (model group, API) the lane serves, from the Router's model list; why not, for the others."""

    served: frozenset[tuple[str, Api]]
    why_not: dict[str, str]  # model group -> why the lane does not serve it (or some of its APIs)

    @classmethod
    def of(cls, model_list: list[dict[str, Any]], strategy: str) -> Plan:
        groups: dict[str, list[dict[str, Any]]] = {}
        for deployment in model_list:
            if isinstance(deployment, dict) and isinstance(deployment.get("model_name"), str):
                groups.setdefault(deployment["model_name"], []).append(deployment)
        served: set[tuple[str, Api]] = set()
        why_not: dict[str, str] = {}
        for group, deployments in groups.items():
            params = [d.get("litellm_params") or {} for d in deployments]
            if not all(str(p.get("model", "")).startswith("hosted_vllm/") for p in params):
                why_not[group] = "not every deployment is hosted_vllm: LiteLLM translates"
                continue
            if strategy != "simple-shuffle":
                why_not[group] = f"routing strategy {strategy} learns from LiteLLM's callbacks: LiteLLM serves it"
                continue
            served.update((group, api) for api in _NATIVE)
            notes = []
            if any(p.get("use_chat_completions_api") for p in params):
                notes.append("/v1/responses is translated to chat completions (litellm.responses_api: translate)")
            else:
                served.add((group, "responses"))
            endpoints = [(d.get("model_info") or {}).get("supported_endpoints") or [] for d in deployments]
            if all("/v1/messages" in e for e in endpoints):
                served.add((group, "messages"))
            else:
                notes.append("/v1/messages is translated to chat completions (litellm.messages_api: translate)")
            if notes:
                why_not[group] = "; ".join(notes)
        return cls(frozenset(served), why_not)

    def describe(self, enabled: bool, mounted: Set[str] | None = None) -> dict[str, Any]:
        """What GET /health shows: per model group and API, the lane that serves it (`mounted`: the APIs whose
        routes LiteLLM has, None: all)."""
        groups = sorted({g for g, _ in self.served} | set(self.why_not))
        apis: tuple[Api, ...] = ("chat", "completion", "messages", "responses")
        models = {g: {a: RELAY if enabled and (g, a) in self.served and (mounted is None or a in mounted)
                      else LITELLM for a in apis} for g in groups}
        notes = dict(self.why_not)
        return {"enabled": enabled, "routes": sorted(ROUTES), "models": models, "notes": notes,
                "everything_else": LITELLM}


class RelayLane:
    """The ASGI layer (installed by `install`, inside the edge guard)."""

    def __init__(self, app: Any, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self._plan: tuple[tuple[int, int, str], Plan] | None = None
        self._routes: dict[str, Any] | None = None
        self._routes_at = 0.0

    def plan(self) -> Plan:
        router = proxyinfo.router()
        model_list = getattr(router, "model_list", None) or []
        strategy = str(getattr(router, "routing_strategy", "simple-shuffle"))
        stamp = (id(model_list), len(model_list), strategy)
        if self._plan is None or self._plan[0] != stamp:
            self._plan = (stamp, Plan.of(model_list, strategy))
        return self._plan[1]

    def route(self, path: str) -> Any:
        """LiteLLM's own FastAPI route for `path`: auth reads the route template from it (requestmodel.route_of).
        Looked up again (at most every ROUTES_RECHECK_S) while one is missing: LiteLLM mounts some at start-up."""
        now = time.monotonic()
        if self._routes is None or (path not in self._routes and now - self._routes_at > ROUTES_RECHECK_S):
            app = getattr(sys.modules.get(proxyinfo.PROXY_MODULE), "app", None)
            self._routes = {r.path: r for r in _routes(getattr(getattr(app, "router", None), "routes", ()))
                            if r.path in ROUTES and "POST" in (getattr(r, "methods", None) or ())}
            self._routes_at = now
        return self._routes.get(path)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        if scope["method"] == "GET" and path == "/health":
            mounted = {ROUTES[p] for p in ROUTES if self.route(p) is not None}
            await self.app(scope, receive, _HealthNote(send, self.plan().describe(self.enabled, mounted)).send)
            return
        api = ROUTES.get(path) if self.enabled and scope["method"] == "POST" else None
        if api is None:
            await self.app(scope, receive, send)
            return
        raw, more = await _read_body(receive)
        body = _json_object(raw) if not more else None
        model = body.get("model") if body is not None else None
        group = _group_of(model) if isinstance(model, str) else None
        served = body is not None and group is not None and (group, api) in self.plan().served
        route = self.route(path) if served else None
        if not served or route is None or body is None or group is None:
            await self.app(scope, _replay(raw, more, receive), send)
            return
        from confgen.gateway.lanerun import serve

        await serve(scope, receive, send, route=route, api=api, body=body, group=group)


def _routes(routes: Any) -> Iterator[Any]:
    """Every route in `routes`, through FastAPI's included routers (fastapi/routing.py `_IncludedRouter`, whose
    `effective_candidates` are the routes it serves, with their full paths)."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _routes(candidates())
        elif isinstance(getattr(route, "path", None), str):
            yield route


def _group_of(model: str) -> str | None:
    from confgen.gateway.requestmodel import group_of

    return group_of(model)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body (the edge guard already bounded its size and its stalls); (bytes, client left early)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), True
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), False


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _replay(raw: bytes, left: bool, receive: Receive) -> Receive:
    """A receive that hands LiteLLM the body the lane read, then the client's own messages."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.disconnect"} if left else {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return again


class _HealthNote:
    """Adds `confgen_lanes` to LiteLLM's GET /health answer (a JSON object, 200 only: refusals pass as they are)."""

    def __init__(self, send: Send, lanes: dict[str, Any]) -> None:
        self._send = send
        self.lanes = lanes
        self._start: Message | None = None
        self._parts: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message.get("status") == 200:
                self._start = message
                return
        elif self._start is not None and message["type"] == "http.response.body":
            self._parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(self._parts)
            answer = _json_object(body)
            if answer is not None:
                body = orjson.dumps({**answer, "confgen_lanes": self.lanes})
            headers = [(k, v) for k, v in self._start.get("headers", []) if k.lower() != b"content-length"]
            await self._send({**self._start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            self._start = None
            await self._send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self._send(message)


def install(enabled: bool) -> bool:
    """Put the lane around LiteLLM's app, inside the edge guard: call before edge.install. False outside the
    proxy. With the lane off it still answers GET /health's `confgen_lanes` (everything: litellm)."""
    proxy = sys.modules.get(proxyinfo.PROXY_MODULE)
    app = getattr(proxy, "app", None)
    if app is None:
        return False
    from confgen.gateway.edge import EdgeGuard

    if app.middleware_stack is None:  # not started: a middleware like any other (edge.install then goes outside)
        if not any(m.cls is RelayLane for m in app.user_middleware):
            app.add_middleware(RelayLane, enabled=enabled)
    elif isinstance(app.middleware_stack, EdgeGuard):
        if not isinstance(app.middleware_stack.app, RelayLane):
            app.middleware_stack.app = RelayLane(app.middleware_stack.app, enabled)
    elif not isinstance(app.middleware_stack, RelayLane):
        app.middleware_stack = RelayLane(app.middleware_stack, enabled)
    log.info("relay lane: %s", "on for vLLM-native requests (GET /health: confgen_lanes)" if enabled else
             "off (RELAY_LANE=off): every request goes through LiteLLM")
    return True
