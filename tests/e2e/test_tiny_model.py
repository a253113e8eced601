"""scripts/build_tiny_model.py, run with the vLLM venv's Python (torch, transformers...)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_tiny_model.py"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

needs_vllm_venv = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason=f"{VLLM_PYTHON} is missing: run `confgen install` to install the CPU build of vLLM",
)

# Loads what the script wrote with transformers, as vLLM would, and reports what a test needs.
LOAD = """
import json, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
ids = tok(prompt)["input_ids"]
model = AutoModelForCausalLM.from_pretrained(path)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits
print(json.dumps({
    "prompt": prompt,
    "eos": tok.eos_token, "bos": tok.bos_token, "pad": tok.pad_token,
    "eos_id": tok.eos_token_id,
    "round_trip": tok.decode(tok("héllo wörld {json: 1}")["input_ids"]),
    "im_start_ids": tok("<|im_start|>")["input_ids"],
    "logits_shape": list(logits.shape),
    "dtype": str(model.dtype),
    "arch": AutoConfig.from_pretrained(path).architectures,
}))
"""


def build(*args: str, python: Path = VLLM_PYTHON) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} is missing: run `confgen install`")
    out = tmp_path_factory.mktemp("tiny") / "tiny-cpu"
    done = build("--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "built tiny model" in done.stdout
    return out


@needs_vllm_venv
def test_writes_a_llama_checkpoint(model_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 2048
    assert (config["hidden_size"], config["num_hidden_layers"]) == (256, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["max_position_embeddings"] == 2048
    assert config["dtype"] == "bfloat16"
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"]
    assert (model_dir / "model.safetensors").stat().st_size < 10_000_000


@needs_vllm_venv
def test_loads_and_applies_the_chatml_template(model_dir: Path) -> None:
    done = subprocess.run([str(VLLM_PYTHON), "-c", LOAD, str(model_dir)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert info["eos"] == "<|im_end|>"
    assert info["bos"] == info["pad"] == "<|endoftext|>"
    assert info["eos_id"] == 2
    assert len(info["im_start_ids"]) == 1  # a special token, not split into pieces
    assert info["round_trip"] == "héllo wörld {json: 1}"  # byte-level: any text round-trips
    assert info["logits_shape"][-1] == 2048
    assert info["dtype"] == "torch.bfloat16"
    assert info["arch"] == ["LlamaForCausalLM"]


@needs_vllm_venv
def test_is_idempotent_and_deterministic(model_dir: Path) -> None:
    again = build("--out", str(model_dir))
    assert again.returncode == 0
    assert "already exists" in again.stdout
    names = ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja")
    before = {name: (model_dir / name).read_bytes() for name in names}
    forced = build("--out", str(model_dir), "--force")
    assert forced.returncode == 0
    assert "built tiny model" in forced.stdout
    for name in names:
        assert (model_dir / name).read_bytes() == before[name], name


@needs_vllm_venv
def test_refuses_a_folder_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    done = build("--out", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_without_torch_it_says_which_python_to_use(tmp_path: Path) -> None:
    """This interpreter (confgen's venv) has no torch: a clean message, no traceback."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this interpreter has torch")
    done = build("--out", str(tmp_path / "m"), python=Path(sys.executable))
    assert done.returncode == 1
    assert ".venv-vllm/bin/python" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()
