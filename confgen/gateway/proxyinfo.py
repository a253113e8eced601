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
