"""The simulator's latency model: token counting, TTFT, inter-token delay, output length, jitter."""

from __future__ import annotations

import random

import pytest

from confgen.sim import latency
from confgen.sim.config import SimConfig

RNG = random.Random


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_count_tokens_is_ceil_chars_over_4_at_least_1(text: str, tokens: int) -> None:
    assert latency.count_tokens(text) == tokens


def test_ttft_is_fixed_plus_per_prompt_token() -> None:
    config = SimConfig(ttft_ms=20, per_prompt_token_ms=0.5)
    assert latency.ttft_s(config, 100, RNG(0)) == pytest.approx(0.070)


def test_itl_and_total_without_jitter() -> None:
    config = SimConfig(ttft_ms=20, per_prompt_token_ms=0.5, itl_ms=10)
    assert latency.itl_s(config, RNG(0)) == pytest.approx(0.010)
    # first token at TTFT, then n - 1 gaps
    assert latency.total_s(config, 100, 8) == pytest.approx(0.070 + 7 * 0.010)
    assert latency.total_s(config, 100, 1) == pytest.approx(0.070)


@pytest.mark.parametrize(("max_tokens", "n", "reason"), [(None, 32, "stop"), (8, 8, "length"), (32, 32, "stop"),
                                                         (100, 32, "stop")])
def test_output_length_is_min_of_max_tokens_and_setting(max_tokens: int | None, n: int, reason: str) -> None:
    config = SimConfig(output_tokens=32)
    assert latency.output_tokens(config, max_tokens) == n
    assert latency.finish_reason(config, max_tokens) == reason


def test_jitter_stays_within_the_fraction_and_averages_out() -> None:
    rng = RNG(1)
    draws = [latency.jittered(1.0, 0.2, rng) for _ in range(2000)]
    assert min(draws) >= 0.8
    assert max(draws) <= 1.2
    assert sum(draws) / len(draws) == pytest.approx(1.0, abs=0.01)
    assert max(draws) - min(draws) > 0.3  # it does vary


def test_no_jitter_and_zero_delays_are_exact() -> None:
    rng = RNG(1)
    assert latency.jittered(0.5, 0.0, rng) == 0.5
    assert latency.jittered(0.0, 0.5, rng) == 0.0
