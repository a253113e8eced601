"""`confgen pull` as a user runs it, against a STAND-IN of the hub's HTTP API (tests/hub_standin.py: the real hub
is out of reach here) serving the files of the tiny model this machine builds, then the real CPU vLLM serving
that model by its hub id from the cache the pull filled, offline, with HF_HOME where the containers mount it
(docker-compose.yml: HF_HOME=/home/app/.cache/huggingface <- ${HF_CACHE}). Port 16620.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.clients_support import ROOT, make_project
from tests.hub_standin import Repo, serve
from tests.procgroup import stop_group

pytestmark = pytest.mark.e2e
REPO_ID = "h18b/tiny-standin"
VLLM_PORT = 16620
TINY = ROOT / ".local" / "models" / "tiny-cpu"
MODEL = f"""\
info:
  description: The tiny model, served from the hub cache under a hub id
  params: 1.4M
  weights_gb: 0.005
  gpu_memory_gb: 0
  device: cpu
serve:
  port: {VLLM_PORT}
command: |
  vllm serve {REPO_ID} \\
    --max-model-len 512 \\
    --dtype bfloat16 \\
    --enforce-eager
env:
  VLLM_CPU_KVCACHE_SPACE: "1"
  HF_HUB_OFFLINE: "1"
litellm:
  max_tokens: 16
"""


@pytest.fixture(scope="module")
def tiny_files() -> Path:
    if not (TINY / "model.safetensors").is_file():  # ./runMe.sh install (or scripts/test) builds it
        subprocess.run([str(ROOT / ".venv" / "bin" / "confgen"), "--root", str(ROOT), "install"], check=True,
                       timeout=900)
    return TINY


def test_pull_shows_progress_then_vllm_serves_the_pulled_model(tiny_files: Path, tmp_path: Path,
                                                                record_property: pytest.RecordProperty) -> None:
    project = make_project(tmp_path / "proj", {"standin": MODEL}, gateway_port=16621)
    cache = tmp_path / "hf"
    with serve({REPO_ID: Repo(tiny_files)}) as hub:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
               "HF_ENDPOINT": hub.url, "HF_CACHE": str(cache)}
        began = time.monotonic()
        pulled = subprocess.run([str(ROOT / "runMe.sh"), "--root", str(project.root), "pull", "standin"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        pull_s = time.monotonic() - began
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    print(pulled.stdout + pulled.stderr)  # the progress output, for `pytest -s`
    assert pulled.stdout.startswith(f"standin: {REPO_ID} @ 0123456789ab, 6 files, 4.6 MB -> {cache}/hub\n")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"{name}: 100%" in pulled.stderr
    assert "standin (all files): 100%" in pulled.stderr

    folder = tmp_path / "vllm"
    folder.mkdir()
    vllm_env = {k: v for k, v in os.environ.items() if k not in ("CONFGEN_ROOT", "PROMETHEUS_MULTIPROC_DIR")}
    vllm_env.update({"HF_HOME": str(cache), "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(folder),
                     "VLLM_CACHE_ROOT": str(folder / "cache"), "PYTHONUNBUFFERED": "1"})
    with (folder / "vllm.log").open("wb") as log:
        proc = subprocess.Popen([str(ROOT / ".venv-vllm" / "bin" / "python"), "-m", "confgen", "--root",
                                 str(project.root), "exec-vllm", "--model", "standin", "--out",
                                 str(folder / "generated")], env=vllm_env, cwd=project.root, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.monotonic() + 300
        while not _healthy(VLLM_PORT):
            assert proc.poll() is None, (folder / "vllm.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < end, "vLLM not healthy within 300 s"
            time.sleep(1)
        key = (project.root / "secrets" / "VLLM_API_KEY").read_text().strip()
        answer = httpx.post(f"http://127.0.0.1:{VLLM_PORT}/v1/completions", timeout=60,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"model": "standin", "prompt": "Hello", "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 4
    finally:
        stop_group(proc)
    record_property("figures", f"pull of {REPO_ID} (4.6 MB, 6 files) from the stand-in in {pull_s:.1f} s")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
