"""The real LiteLLM proxy (pinned 1.108.7) boots on the config rendered for the WHOLE catalog."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from confgen.catalog import select
from confgen.load import Project, model_names
from confgen.render import write_all

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_litellm_serves_every_catalog_model(tmp_path: Path) -> None:
    project = Project(ROOT)
    names = model_names(project)
    write_all(select(project, names, environ={}), tmp_path)
    port, key = _free_port(), f"sk-{secrets.token_urlsafe(24)}"
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "VLLM_API_KEY": "sk-unused-backend-key",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "litellm.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "litellm"), "--config", str(tmp_path / "config.yaml"),
                             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        listed: list[str] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"},
                                 timeout=2)
                if resp.status_code == 200:
                    listed = sorted(m["id"] for m in resp.json()["data"])
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert listed == sorted(names)
        info = httpx.get(f"http://127.0.0.1:{port}/model/info", headers={"Authorization": f"Bearer {key}"},
                         timeout=10).json()["data"]
        by_name = {m["model_name"]: m for m in info}
        assert by_name["glm47-flash"]["litellm_params"]["api_base"] == "http://127.0.0.1:8001/v1"
        assert key not in (tmp_path / "config.yaml").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
