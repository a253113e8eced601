#!/usr/bin/env python3
"""Build a tiny random-weight Llama model (no downloads) for CPU serving and end-to-end tests.

The model's output is gibberish, but vLLM loads and serves it like any real checkpoint, so the
whole path (vLLM -> LiteLLM -> client) can be tested on a machine without a GPU.

Run it with the vLLM venv's Python, which has torch, transformers and tokenizers:

    .venv-vllm/bin/python scripts/build_tiny_model.py [--out DIR] [--force]

It writes config.json, model.safetensors, generation_config.json and the tokenizer files
(byte-level BPE, vocab 2048, ChatML chat template) into DIR (default: .local/models/tiny-cpu
under the project root). Building takes a few seconds; the result is deterministic.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import localbuild

DEFAULT_OUT = localbuild.PROJECT_ROOT / ".local" / "models" / "tiny-cpu"

VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
SEED = 0

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]  # ids 0, 1, 2

# ChatML, as Qwen-style models use it; tools are listed in the system turn when given. Content may be a
# string or a list of parts (OpenAI content parts, Anthropic text blocks as LiteLLM forwards them): both
# render as text, parts joined by newlines as vLLM joins them for a string-only template
# (vllm/entrypoints/chat_utils.py, --chat-template-content-format). Assistant tool calls render as
# Hermes <tool_call> blocks (what --tool-call-parser hermes reads back).
CHAT_TEMPLATE = (
    "{%- macro text(content) %}"
    "{%- if content is string %}{{- content }}"
    "{%- elif content %}"
    "{%- for part in content %}"
    "{%- if part['type'] == 'text' %}{{- ('\\n' if not loop.first else '') + part['text'] }}{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- endmacro %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- text(messages[0]['content']) + '\\n\\n' }}"
    "{%- endif %}"
    "{{- 'You may call these tools:\\n' }}"
    "{%- for tool in tools %}{{- tool | tojson }}{{- '\\n' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + text(messages[0]['content']) + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + text(message['content']) }}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{{- '\\n<tool_call>\\n' + (call['function'] | tojson) + '\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REQUIRED_FILES = ("config.json", "model.safetensors", "generation_config.json", *TOKENIZER_FILES)

_WORDS = (
    "the", "a", "an", "model", "server", "request", "response", "token", "stream", "chat", "user",
    "assistant", "system", "tool", "call", "json", "yaml", "config", "port", "host", "key",
    "gateway", "proxy", "cache", "memory", "batch", "prompt", "answer", "question", "code",
    "python", "function", "class", "return", "import", "def", "if", "else", "for", "while", "with",
    "try", "except", "raise", "list", "dict", "string", "number", "true", "false", "null", "value",
    "name", "id", "time", "second", "minute", "error", "ok", "status", "fast", "slow", "small",
    "large", "tiny", "random", "weight", "layer", "head", "vocab", "byte", "text", "line", "file",
    "path", "run", "start", "stop", "health", "metrics", "ready", "wait", "send", "receive",
    "read", "write", "open", "close", "test", "check", "build",
)
_PUNCT = (".", ",", "?", "!", ":", ";")


def corpus(seed: int = SEED, lines: int = 3000) -> list[str]:
    """Local training text: sentences, code, numbers, JSON and ChatML turns (deterministic)."""
    rng = random.Random(seed)  # noqa: S311 - training text, not secrets
    out: list[str] = []
    for i in range(lines):
        words = rng.choices(_WORDS, k=rng.randint(4, 14))
        sentence = " ".join(words).capitalize() + rng.choice(_PUNCT)
        kind = i % 5
        if kind == 0:
            out.append(sentence)
        elif kind == 1:
            name, arg = rng.choice(_WORDS), rng.choice(_WORDS)
            out.append(f"def {name}_{i}({arg}):\n    return {arg} + {rng.randint(0, 999)}\n")
        elif kind == 2:
            out.append(f'{{"{rng.choice(_WORDS)}": {rng.randint(-500, 500)}, "ok": true}}')
        elif kind == 3:
            out.append(f"{IM_START}user\n{sentence}{IM_END}\n{IM_START}assistant\n")
        else:
            out.append(f"{rng.random():.6f} {rng.randint(0, 10**6)} {sentence.upper()}\t{sentence}")
    return out


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> Any:
    """A byte-level BPE tokenizer (any UTF-8 text round-trips) wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast  # type: ignore[import-not-found, unused-ignore]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=PAD,
        eos_token=IM_END,
        pad_token=PAD,
        model_max_length=MAX_POSITIONS,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: Any) -> Any:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=ids[PAD],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[PAD],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD],
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
    )
    return model


def write(folder: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _portable_tokenizer_config(folder / "tokenizer_config.json")


def _portable_tokenizer_config(path: Path) -> None:
    """transformers 5 names the class TokenizersBackend; 4.x only knows PreTrainedTokenizerFast.

    Both load the same tokenizer.json (checked: same ids, same chat template) under that name.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return localbuild.main(argv, prog="build_tiny_model", what="tiny model", default_out=DEFAULT_OUT,
                           required=REQUIRED_FILES, write=write, imports=("tokenizers", "torch", "transformers"))


if __name__ == "__main__":
    sys.exit(main())
