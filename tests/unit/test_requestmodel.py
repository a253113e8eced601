"""confgen.gateway.requestmodel through real FastAPI routing (the templates LiteLLM mounts) and LiteLLM's
own body parser and model resolution: the model a request addresses is the one LiteLLM would serve, path
before body, and requests that address none, several or a non-name are refused before any routing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from confgen.gateway import requestmodel

app = FastAPI()


async def _answer(request: Request) -> JSONResponse:
    try:
        found = await requestmodel.addressed(request)
    except requestmodel.NotAddressable as refused:
        return JSONResponse({"reason": refused.reason, "message": refused.message}, status_code=refused.status)
    return JSONResponse({"route": found.route, "kind": found.kind, "model": found.model,
                         "reserve": found.reservation(64)})


for _template in [*requestmodel.ROUTES, "/v1/files", "/vllm/{endpoint:path}"]:
    app.add_api_route(_template, _answer, methods=["GET", "POST"])
client = TestClient(app)


def post(path: str, body: Any) -> tuple[int, dict[str, Any]]:
    answer = client.post(path, json=body)
    return answer.status_code, answer.json()


@pytest.mark.parametrize(("path", "body", "model"), [
    ("/v1/chat/completions", {"model": "a"}, "a"),
    ("/chat/completions", {"model": "a"}, "a"),
    ("/openai/deployments/b/chat/completions", {"model": "a"}, "b"),  # the path wins, as in LiteLLM's handler
    ("/openai/deployments/b/chat/completions", {}, "b"),
    ("/engines/b/completions", {"model": "a"}, "b"),
    ("/openai/deployments/org/b/embeddings", {"model": "a"}, "org/b"),
    ("/v1/messages", {"model": "a", "max_tokens": 5}, "a"),
    ("/v1/responses", {"model": "a"}, "a"),
])
def test_the_model_is_the_one_litellm_serves(path: str, body: dict[str, Any], model: str) -> None:
    status, answer = post(path, body)
    assert (status, answer["kind"], answer["model"]) == (200, "inference", model)


@pytest.mark.parametrize(("path", "body", "status", "reason"), [
    ("/v1/chat/completions", {"messages": []}, 400, "model_missing"),
    ("/v1/chat/completions", {"model": ["a", "b"]}, 400, "model_invalid"),
    ("/v1/chat/completions", {"model": "a,b"}, 400, "model_invalid"),  # LiteLLM: a batch across models
    ("/openai/deployments/a,b/chat/completions", {"model": "a"}, 400, "model_invalid"),
    ("/openai/deployments/%20x/chat/completions", {"model": "a"}, 400, "model_invalid"),
    ("/v1/chat/completions", {"model": 7}, 400, "model_invalid"),
    ("/v1/files", {"model": "a"}, 403, "route_not_allowed"),
    ("/vllm/v1/chat/completions", {"model": "a"}, 403, "route_not_allowed"),
])
def test_requests_that_address_no_single_model_are_refused(path: str, body: Any, status: int,
                                                           reason: str) -> None:
    answer_status, answer = post(path, body)
    assert (answer_status, answer["reason"]) == (status, reason)


def test_a_body_that_is_not_json_is_refused_with_the_parser_s_reason() -> None:
    answer = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["reason"]) == (400, "invalid_body")
    assert "Invalid JSON payload" in answer.json()["message"]


def test_listings_name_the_model_of_their_path() -> None:
    assert client.get("/v1/models").json() == {"route": "/v1/models", "kind": "listing", "model": None, "reserve": 0}
    assert client.get("/v1/models/b").json()["model"] == "b"


def test_the_reservation_covers_prompt_and_completion() -> None:
    text = "x" * 300
    _, chat = post("/v1/chat/completions", {"model": "a", "messages": [{"role": "user", "content": text}]})
    _, capped = post("/v1/chat/completions", {"model": "a", "max_tokens": 5, "messages": [{"content": text}]})
    _, embed = post("/v1/embeddings", {"model": "a", "input": text})
    assert chat["reserve"] >= 100 + 64  # 300 characters of prompt at most 3 a token, and the model's default cap
    assert 100 + 5 <= capped["reserve"] < chat["reserve"]
    assert 100 <= embed["reserve"] < 120  # embeddings generate nothing
