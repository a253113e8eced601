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

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT_ROOT / ".local" / "models" / "tiny-cpu"

VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
SEED = 0

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]  # ids 0, 1, 2

# ChatML, as Qwen-style models use it; tools are listed in the system turn when given.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] + '\\n\\n' }}"
    "{%- endif %}"
    "{{- 'You may call these tools:\\n' }}"
    "{%- for tool in tools %}{{- tool | tojson }}{{- '\\n' }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- elif message['content'] %}"
    "{%- for part in message['content'] %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
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


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


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


def build(out: Path) -> float:
    """Build into a temporary folder next to `out`, then move the files in; returns MB written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
        out.mkdir(exist_ok=True)
        mode = 0o666 & ~_umask()
        size = 0
        for item in sorted(tmp.iterdir()):
            item.chmod(mode)  # some files are written through private temp files (0600)
            size += item.stat().st_size
            os.replace(item, out / item.name)
        return size / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _portable_tokenizer_config(path: Path) -> None:
    """transformers 5 names the class TokenizersBackend; 4.x only knows PreTrainedTokenizerFast.

    Both load the same tokenizer.json (checked: same ids, same chat template) under that name.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fail(message: str, code: int = 1) -> int:
    print(f"build_tiny_model: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a tiny random-weight Llama model (ChatML tokenizer) for CPU tests.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write (default: {DEFAULT_OUT.relative_to(PROJECT_ROOT)} "
                             "under the project root)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    args = parser.parse_args(argv)
    out: Path = args.out.expanduser().absolute()

    if out.exists() and not out.is_dir():
        return fail(f"{out} exists and is not a folder", 2)
    if is_complete(out) and not args.force:
        print(f"tiny model already exists in {out} (use --force to rebuild)")
        return 0
    foreign = out.is_dir() and any(out.iterdir()) and not (out / "config.json").exists()
    if foreign and not args.force:
        return fail(f"{out} is not empty and holds no model; pick another --out or pass --force", 2)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import tokenizers  # noqa: F401
        import torch  # noqa: F401  # type: ignore[import-not-found, unused-ignore]
        import transformers  # noqa: F401  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        return fail(f"{exc.name or exc} is not installed in {sys.executable}; run this script "
                    "with the vLLM venv's Python: "
                    ".venv-vllm/bin/python scripts/build_tiny_model.py")

    start = time.monotonic()
    try:
        size_mb = build(out)
    except OSError as exc:
        return fail(f"cannot write {out}: {exc.strerror or exc}")
    print(f"built tiny model in {out} ({size_mb:.1f} MB, {time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
