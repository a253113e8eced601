"""What a key sees in GET /v1/models (proxyinfo.listed_models) and the proxy lookups outside it (the e2e test
test_gateway_keys.py::test_models_list_shows_only_what_a_key_may_use checks it in LiteLLM)."""

from __future__ import annotations

from confgen.gateway import proxyinfo
from confgen.gateway.proxyinfo import NO_MODELS, listed_models

SERVED = frozenset({"glm47-flash", "tiny-cpu", "qwen3-coder"})


def test_a_key_without_a_model_list_sees_every_model() -> None:
    assert listed_models(None, SERVED) == []  # LiteLLM: an empty list is every model


def test_a_key_sees_the_served_models_it_may_use_in_its_order() -> None:
    assert listed_models(("tiny-cpu", "glm47-flash"), SERVED) == ["tiny-cpu", "glm47-flash"]
    assert listed_models(("tiny-cpu", "not-served-here"), SERVED) == ["tiny-cpu"]


def test_a_key_for_none_of_the_served_models_sees_none() -> None:
    assert listed_models(("elsewhere",), SERVED) == [NO_MODELS]
    assert NO_MODELS == "no-default-models"


def test_outside_the_proxy_nothing_is_served_and_nothing_is_mounted() -> None:
    assert proxyinfo.served_models() == frozenset()
    assert proxyinfo.mount("/metrics", object()) is False
