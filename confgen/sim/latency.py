"""The latency model, as pure functions of the settings (times in seconds).

- prompt tokens: ceil(characters / 4) of the prompt text (a cheap stand-in for a BPE tokenizer, close
  for English text), at least 1;
- time to first token (TTFT) = (ttft_ms + per_prompt_token_ms * prompt tokens) / 1000, counted from the
  moment the request gets a slot (time in the queue comes on top);
- then one token every itl_ms; output tokens = min(max_tokens, output_tokens), so the last token leaves
  at TTFT + (n - 1) * itl_ms / 1000;
- jitter j scales each delay by a factor drawn uniformly from [1 - j, 1 + j].
"""

from __future__ import annotations

import random

from confgen.sim.config import SimConfig


def count_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def output_tokens(config: SimConfig, max_tokens: int | None) -> int:
    """How many tokens to generate; `finish_reason` is "length" when max_tokens cut the output short."""
    if max_tokens is None:
        return config.output_tokens
    return max(0, min(max_tokens, config.output_tokens))


def finish_reason(config: SimConfig, max_tokens: int | None) -> str:
    return "length" if max_tokens is not None and max_tokens < config.output_tokens else "stop"


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    if jitter <= 0 or seconds <= 0:
        return seconds
    return seconds * rng.uniform(1.0 - jitter, 1.0 + jitter)


def ttft_s(config: SimConfig, prompt_tokens: int, rng: random.Random) -> float:
    base = (config.ttft_ms + config.per_prompt_token_ms * prompt_tokens) / 1000.0
    return jittered(base, config.jitter, rng)


def itl_s(config: SimConfig, rng: random.Random) -> float:
    return jittered(config.itl_ms / 1000.0, config.jitter, rng)


def total_s(config: SimConfig, prompt_tokens: int, n_tokens: int) -> float:
    """The expected (jitter-free) time from slot to last token."""
    base = (config.ttft_ms + config.per_prompt_token_ms * prompt_tokens) / 1000.0
    return base + max(0, n_tokens - 1) * config.itl_ms / 1000.0
