"""What the gateway code reads from the LiteLLM proxy it runs in, without importing it (tests run without it)."""

from __future__ import annotations

import sys
from collections.abc import Set
from types import ModuleType
from typing import Any, Final

PROXY_MODULE = "litellm.proxy.proxy_server"
# LiteLLM's SpecialModelNames.no_default_models: in a key's model list it stands for "no model" and is never listed.
NO_MODELS: Final = "no-default-models"


def _proxy() -> ModuleType | None:
    return sys.modules.get(PROXY_MODULE)


def served_models() -> Set[str]:
    """The model names this gateway serves (its router's); empty outside the proxy."""
    names = getattr(getattr(_proxy(), "llm_router", None), "model_names", None)
    return names if isinstance(names, set | frozenset) else frozenset()


def mount(path: str, app: Any) -> bool:
    """Mount an ASGI app on the proxy's FastAPI app (as LiteLLM mounts its own /metrics); False outside it."""
    proxy = _proxy()
    if proxy is None:
        return False
    proxy.app.mount(path, app)
    return True


def listed_models(allowed: tuple[str, ...] | None, served: Set[str]) -> list[str]:
    """A key's model list for LiteLLM, which GET /v1/models shows: the served models the key may use. LiteLLM
    lists every model for an empty list, so a key that may use none of the served models gets NO_MODELS."""
    if allowed is None:
        return []
    return [m for m in allowed if m in served] or [NO_MODELS]


def group_aliases() -> dict[str, Any]:
    """The router's model_group_alias ({alias: group or {"model": group, ...}}); empty outside the proxy."""
    aliases = getattr(getattr(_proxy(), "llm_router", None), "model_group_alias", None)
    return aliases if isinstance(aliases, dict) else {}


def default_max_tokens(model: str) -> int | None:
    """The max_tokens our config sets on `model`'s deployments (the completion cap a request gets when it
    asks for none); None outside the proxy or when unset."""
    router = getattr(_proxy(), "llm_router", None)
    caps = [d.get("litellm_params", {}).get("max_tokens") for d in getattr(router, "model_list", None) or ()
            if isinstance(d, dict) and d.get("model_name") == model]
    ints = [c for c in caps if isinstance(c, int) and c > 0]
    return max(ints) if ints else None


def request_settings() -> tuple[dict[str, Any], str | None]:
    """The proxy's general_settings and its `--model` (user_model), which outrank a request's path and body
    in LiteLLM's choice of model; ({}, None) outside the proxy."""
    proxy = _proxy()
    settings = getattr(proxy, "general_settings", None)
    user_model = getattr(proxy, "user_model", None)
    return (settings if isinstance(settings, dict) else {}), (user_model if isinstance(user_model, str) else None)


def router() -> Any:
    """The proxy's LiteLLM Router (`llm_router`); None outside the proxy or before its config is loaded."""
    return getattr(_proxy(), "llm_router", None)
