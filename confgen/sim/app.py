"""The routes, as one raw ASGI app (vLLM's paths, auth on /v1 like vLLM, plus /sim/* controls)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import time
from typing import Any

from confgen.sim import asgi
from confgen.sim.asgi import Receive, Scope, Send
from confgen.sim.config import FaultError, Faults, SimConfig
from confgen.sim.engine import Engine
from confgen.sim.latency import count_tokens
from confgen.sim.parse import ApiError, Kind, message_text, parse_json, parse_request

INFERENCE: dict[str, Kind] = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
                              "/v1/responses": "responses"}
GET_PATHS = frozenset({"/health", "/v1/models", "/metrics", "/sim/stats", "/sim/faults", "/version", "/is_sleeping"})
POST_PATHS = frozenset({*INFERENCE, "/tokenize", "/sim/faults", "/sim/stats/reset"})
# vLLM's sleep API (vllm/entrypoints/openai/api_server.py, mounted with VLLM_SERVER_DEV_MODE=1).
SLEEP_PATHS = frozenset({"/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/reset_prefix_cache"})


class SimApp:
    def __init__(self, config: SimConfig, faults: Faults | None = None) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.engine = Engine(config, self.faults)
        self.started = int(time.time())
        self._key_hash = hashlib.sha256(config.api_key.encode()).digest() if config.api_key else None
        self.sleeping = 0  # the level it sleeps at; 0: awake
        self.post_paths = POST_PATHS | (SLEEP_PATHS - {"/is_sleeping"} if config.sleep_mode else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path not in (GET_PATHS if method == "GET" else self.post_paths if method == "POST" else ()):
            known = path in GET_PATHS or path in self.post_paths
            await asgi.respond_json(send, 405 if known else 404,
                                    {"detail": "Method Not Allowed" if known else "Not Found"})
            return
        if path.startswith("/sim/") or path in SLEEP_PATHS:
            await (self._control(path, receive, send) if path.startswith("/sim/")
                   else self._sleep_api(path, scope, receive, send))
            return

        if self.faults.starting():
            if path != "/health":
                self.engine.stats.by_status[503] += path in INFERENCE
            await asgi.respond_json(send, 503, ApiError(503, "the server is starting", "ServiceUnavailableError")
                                    .body())
            return
        if path.startswith("/v1") and self._key_hash is not None and not self._authorized(scope):
            await asgi.respond_json(send, 401, {"error": "Unauthorized"})
            return
        kind = INFERENCE.get(path)
        if kind is not None:
            await self._infer(kind, receive, send)
        elif path == "/health":
            await asgi.respond(send, 200, b"", asgi.JSON)
        elif path == "/metrics":
            await asgi.respond(send, 200, self.engine.metrics.render().encode(), asgi.TEXT)
        elif path == "/v1/models":
            await asgi.respond_json(send, 200, self._models())
        elif path == "/version":
            await asgi.respond_json(send, 200, {"version": "sim"})
        else:
            await self._tokenize(receive, send)

    def _authorized(self, scope: Scope) -> bool:
        token = asgi.bearer_token(scope)
        return token is not None and secrets.compare_digest(hashlib.sha256(token.encode()).digest(),
                                                            self._key_hash or b"")

    async def _infer(self, kind: Kind, receive: Receive, send: Send) -> None:
        if self.sleeping:
            await asgi.respond_json(send, 503, ApiError(503, "the engine is sleeping", "ServiceUnavailableError")
                                    .body())
            return
        arrival = time.monotonic()
        stats = self.engine.stats
        stats.requests += 1
        stats.by_kind[kind] += 1
        stats.in_flight += 1
        try:
            body = await asgi.read_body(receive)
            if self.faults.hang:
                stats.hung += 1
                await receive()  # returns when the client goes away; the answer never comes
                return
            self._maybe_fail()
            request = parse_request(kind, parse_json(body), self.config)
            await self.engine.serve(request, arrival, receive, send)
        except ApiError as error:
            stats.by_status[error.status] += 1
            await asgi.respond_json(send, error.status, error.body())
        finally:
            stats.in_flight -= 1

    def _maybe_fail(self) -> None:
        if self.faults.error_rate and self.engine.rng.random() < self.faults.error_rate:
            raise ApiError(self.faults.error_status, "injected fault (sim error_rate)", "InternalServerError")

    def _models(self) -> dict[str, Any]:
        root = self.config.served_model_names[0]
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": self.started, "owned_by": "vllm", "root": root,
             "parent": None, "max_model_len": self.config.max_model_len,
             "permission": [{"id": f"modelperm-{name}", "object": "model_permission", "created": self.started,
                             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                             "organization": "*", "group": None, "is_blocking": False}]}
            for name in self.config.served_model_names]}

    async def _tokenize(self, receive: Receive, send: Send) -> None:
        try:
            doc = parse_json(await asgi.read_body(receive))
        except ApiError as error:
            await asgi.respond_json(send, error.status, error.body())
            return
        messages = doc.get("messages")
        if isinstance(messages, list):
            text = "\n".join(message_text(m) for m in messages if isinstance(m, dict))
        elif isinstance(doc.get("prompt"), str):
            text = doc["prompt"]
        else:
            bad = ApiError(400, "expected a prompt string or a messages list", param="prompt")
            await asgi.respond_json(send, bad.status, bad.body())
            return
        count = count_tokens(text)
        await asgi.respond_json(send, 200, {"count": count, "max_model_len": self.config.max_model_len,
                                            "tokens": list(range(count)), "token_strs": None})

    async def _control(self, path: str, receive: Receive, send: Send) -> None:
        if path == "/sim/stats":
            engine = self.engine
            await asgi.respond_json(send, 200, {**engine.stats.as_dict(), "running": engine.metrics.running,
                                                "waiting": engine.metrics.waiting, "faults": self.faults.as_dict()})
        elif path == "/sim/stats/reset":
            await asgi.read_body(receive)
            self.engine.stats.reset()
            await asgi.respond_json(send, 200, self.engine.stats.as_dict())
        else:
            body = await asgi.read_body(receive)
            try:
                self.faults.update(parse_json(body) if body else {})
            except FaultError as error:
                await asgi.respond_json(send, 400, ApiError(400, str(error)).body())
                return
            except ApiError as error:
                await asgi.respond_json(send, error.status, error.body())
                return
            await asgi.respond_json(send, 200, self.faults.as_dict())

    async def _sleep_api(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /sleep?level=N (a query parameter, as in vLLM: a JSON body is ignored), POST /wake_up,
        GET /is_sleeping; /collective_rpc (reload_weights) and /reset_prefix_cache answer 200."""
        await asgi.read_body(receive)
        if not self.config.sleep_mode:
            await asgi.respond_json(send, 404, {"detail": "Not Found"})
            return
        if path == "/is_sleeping":
            await asgi.respond_json(send, 200, {"is_sleeping": bool(self.sleeping)})
            return
        if path == "/sleep":
            query = dict(part.split("=", 1) for part in scope.get("query_string", b"").decode().split("&")
                         if "=" in part)
            level = query.get("level", "1")
            if level not in {"1", "2"}:
                await asgi.respond_json(send, 400, ApiError(400, f"level must be 1 or 2, got {level!r}").body())
                return
            await asyncio.sleep(self.config.sleep_s)
            self.sleeping = int(level)
        elif path == "/wake_up":
            if self.faults.wake_kills:
                os.kill(os.getpid(), signal.SIGKILL)  # the engine dies, as in vllm#50011
            await asyncio.sleep(self.config.wake_s)
            self.sleeping = 0
        await asgi.respond(send, 200, b"", asgi.JSON)
