"""The controller's HTTP API on 127.0.0.1, for the gateway and the CLI. Every route but /health and /metrics needs
`Authorization: Bearer <token>`, the token in <run folder>/controller/token (mode 0600).

    GET  /status                          every model's state, the budget in use, swaps
    GET  /metrics                         the same for Prometheus (confgen/controller/metrics.py)
    POST /models/{model}/ensure-ready     returns when ready (?timeout=S&priority=N, lower first); 503 +
                                          Retry-After with the reason
    POST /models/{model}/sleep?level=N    POST /models/{model}/stop
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confgen.atomic import write_atomic
from confgen.controller.core import Controller, LoadFailed

TOKEN_FILE = Path("controller") / "token"


def ensure_token(run_dir: Path) -> Path:
    """<run>/controller/token, created (0600) when missing; the gateway and the CLI read it."""
    path = run_dir / TOKEN_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return path


def app(controller: Controller, token: str) -> Starlette:
    def authorized(request: Request) -> bool:
        sent = request.headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def refuse() -> JSONResponse:
        return JSONResponse({"error": "missing or wrong controller token (see <run folder>/controller/token)"}, 401)

    def model_of(request: Request) -> str | None:
        return controller.resolve(request.path_params["model"])

    def unknown(request: Request) -> JSONResponse:
        return JSONResponse({"error": f"{request.path_params['model']!r} is not an on-demand model; known: "
                                      f"{', '.join(controller.slots)}"}, 404)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def metrics(request: Request) -> Response:
        from confgen.controller.metrics import render  # prometheus-client: the gateway venv's

        return Response(render(controller), media_type="text/plain; version=0.0.4")

    async def status(request: Request) -> Response:
        return JSONResponse(controller.status()) if authorized(request) else refuse()

    async def ensure_ready(request: Request) -> Response:
        if not authorized(request):
            return refuse()
        name = model_of(request)
        if name is None:
            return unknown(request)
        raw, rank = request.query_params.get("timeout"), request.query_params.get("priority") or "0"
        try:
            timeout = float(raw) if raw else None
        except ValueError:
            return JSONResponse({"error": f"timeout: expected seconds, got {raw!r}"}, 400)
        if not rank.lstrip("-").isdigit():
            return JSONResponse({"error": f"priority: expected an integer (lower first), got {rank!r}"}, 400)
        try:
            await controller.ensure_ready(name, timeout, int(rank))
        except LoadFailed as failed:
            return JSONResponse({"error": failed.message, "retry_after_s": failed.retry_after_s}, 503,
                                headers={"Retry-After": str(failed.retry_after_s)})
        return JSONResponse(controller.status()["models"][name])

    async def sleep(request: Request) -> Response:
        level = request.query_params.get("level", "1")
        if level not in {"1", "2"} and authorized(request):
            return JSONResponse({"error": f"level: expected 1 or 2, got {level!r}"}, 400)
        return await act(request, lambda name: controller.sleep(name, int(level)))

    async def stop(request: Request) -> Response:
        return await act(request, controller.stop)

    async def act(request: Request, action: Callable[[str], Awaitable[None]]) -> Response:
        if not authorized(request):
            return refuse()
        name = model_of(request)
        if name is None:
            return unknown(request)
        await action(name)
        return JSONResponse(controller.status()["models"][name])

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # uvicorn re-raises SIGTERM after its shutdown, so atexit never runs: the servers stop here.
        await controller.start()
        try:
            yield
        finally:
            await controller.close()

    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics), Route("/status", status),
                             Route("/models/{model:path}/ensure-ready", ensure_ready, methods=["POST"]),
                             Route("/models/{model:path}/sleep", sleep, methods=["POST"]),
                             Route("/models/{model:path}/stop", stop, methods=["POST"])], lifespan=lifespan)


def fetch_status(url: str, run_dir: Path) -> dict[str, Any]:
    """The controller's GET /status, for the CLI (`./runMe.sh status`, `confgen models`)."""
    import httpx

    token = (run_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    resp = httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body
