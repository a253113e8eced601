"""confgen pull against a stand-in of the hub's HTTP API (tests/hub_standin.py) on loopback: progress per file
and overall, the cache layout vLLM reads, resume of an interrupted file, gated models refused before any
download, the disk check, and the messages for a missing repository or an unreachable hub."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

from confgen.errors import ConfgenError
from confgen.runtime import pull
from tests.conftest import WriteModel
from tests.hub_standin import Hub, Repo, serve

REPO_ID = "h18b/standin-tiny"
SHA = "0123456789abcdef0123456789abcdef01234567"
MODEL_FILE = f"""\
info:
  description: A model whose repository the stand-in hub serves
  params: 1M
  weights_gb: 0.003
  gpu_memory_gb: 1
command: |
  vllm serve {REPO_ID}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A small model's files: config, tokenizer and 3 MB of weights."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": 256}\n')
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}\n')
    (folder / "model.safetensors").write_bytes(hashlib.sha256(b"seed").digest() * (3 * 2**20 // 32))
    return folder


@pytest.fixture
def hub(files: Path) -> Iterator[Hub]:
    with serve({REPO_ID: Repo(files, sha=SHA), "h18b/gated": Repo(files, gated=True, sha=SHA)}) as running:
        yield running


@pytest.fixture
def cli_env(hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return {"HF_ENDPOINT": hub.url, "HF_CACHE": str(tmp_path / "hf")}


def snapshot(env: dict[str, str], repo: str = REPO_ID) -> Path:
    return Path(env["HF_CACHE"]) / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA


def downloads(hub: Hub) -> list[tuple[str, str, str]]:
    return [r for r in hub.requests if "/resolve/" in r[1]]


def test_pull_downloads_every_file_with_a_bar_per_file_and_overall(
        run_cli: Callable[..., Result], write_model: WriteModel, hub: Hub, files: Path,
        cli_env: dict[str, str]) -> None:
    write_model("standin", MODEL_FILE)
    result = run_cli("pull", "standin", env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"standin: {REPO_ID} @ 0123456789ab, 3 files, 3.1 MB -> {cli_env['HF_CACHE']}/hub",
        f"standin: complete in {snapshot(cli_env)}",
    ]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # one bar each, run to its end
        assert f"{name}: 100%" in result.stderr
        assert (snapshot(cli_env) / name).read_bytes() == (files / name).read_bytes()
    assert "standin (all files): 100%" in result.stderr
    # What an offline vLLM reads to find the snapshot of "main" (huggingface_hub's cache layout).
    assert (snapshot(cli_env).parents[1] / "refs" / "main").read_text() == SHA
    assert "3.15M/3.15M" in result.stderr  # the overall bar counts bytes of all files
    print(result.stderr)  # the progress output, for `pytest -s`


def test_a_second_pull_downloads_nothing(run_cli: Callable[..., Result], write_model: WriteModel, hub: Hub,
                                         cli_env: dict[str, str]) -> None:
    write_model("standin", MODEL_FILE)
    assert run_cli("pull", "standin", env=cli_env).exit_code == 0
    hub.requests.clear()
    again = run_cli("pull", "standin", env=cli_env)
    assert again.exit_code == 0, again.output
    assert "(3.1 MB already in the cache)" in again.stdout
    assert [r for r in downloads(hub) if r[0] == "GET"] == []


def test_a_failed_pull_keeps_the_files_it_completed(
        run_cli: Callable[..., Result], write_model: WriteModel, hub: Hub, files: Path,
        cli_env: dict[str, str]) -> None:
    write_model("standin", MODEL_FILE)
    hub.fail.add("tokenizer.json")
    failed = run_cli("pull", "standin", env=cli_env)
    assert failed.exit_code == 3
    assert failed.stderr.splitlines()[-1].startswith(f"error: {REPO_ID}: tokenizer.json: download failed: ")
    assert failed.stderr.splitlines()[-1].endswith("(run `confgen pull` again: it goes on where it stopped)")
    hub.fail.clear()
    hub.requests.clear()
    again = run_cli("pull", "standin", env=cli_env)
    assert again.exit_code == 0, again.output
    assert "(3.1 MB already in the cache)" in again.stdout
    assert [r[1].rsplit("/", 1)[1] for r in downloads(hub) if r[0] == "GET"] == ["tokenizer.json"]
    assert (snapshot(cli_env) / "tokenizer.json").read_bytes() == (files / "tokenizer.json").read_bytes()


def test_a_dropped_connection_resumes_the_file_with_a_range_request(
        write_model: WriteModel, tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    """huggingface_hub's http_get retries a dropped transfer from the last 10 MB chunk it wrote
    (constants.DOWNLOAD_CHUNK_SIZE), with `Range: bytes=N-`."""
    folder = tmp_path / "big"
    folder.mkdir()
    weights = hashlib.sha256(b"big").digest() * (24 * 2**20 // 32)
    (folder / "model.safetensors").write_bytes(weights)
    write_model("standin", MODEL_FILE)
    with serve({REPO_ID: Repo(folder, sha=SHA)}, drop_after={"model.safetensors": 15 * 2**20}) as flaky:
        env = {"HF_ENDPOINT": flaky.url, "HF_CACHE": str(tmp_path / "hf")}
        result = run_cli("pull", "standin", env=env)
    assert result.exit_code == 0, result.output
    assert [r[2] for r in flaky.requests if r[0] == "GET" and "/resolve/" in r[1]] == ["", f"bytes={10 * 2**20}-"]
    assert (snapshot(env) / "model.safetensors").read_bytes() == weights


def test_a_gated_model_without_a_token_is_refused_before_any_download(
        run_cli: Callable[..., Result], write_model: WriteModel, hub: Hub, cli_env: dict[str, str]) -> None:
    write_model("gated", MODEL_FILE.replace(REPO_ID, "h18b/gated"))
    result = run_cli("pull", "gated", env=cli_env)
    assert result.exit_code == 3
    assert result.stderr == (
        "error: h18b/gated: is gated: the hub serves its files only with a token of an account that accepted its "
        "terms (accept them on the model's page, then put a token in secrets/HF_TOKEN (one line, chmod 600))\n")
    assert downloads(hub) == []


def test_a_gated_model_with_a_token_in_secrets_is_pulled(
        run_cli: Callable[..., Result], write_model: WriteModel, write_secret: Callable[[str, str], Path],
        hub: Hub, cli_env: dict[str, str]) -> None:
    write_model("gated", MODEL_FILE.replace(REPO_ID, "h18b/gated"))
    write_secret("HF_TOKEN", "hf_standin_token")
    result = run_cli("pull", "gated", env=cli_env)
    assert result.exit_code == 0, result.output
    assert (snapshot(cli_env, "h18b/gated") / "config.json").is_file()


def test_not_enough_disk_is_refused_with_the_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConfgenError) as caught:
        pull.check_disk(62 * 10**9, tmp_path / "hf" / "hub", free=lambda _: 40 * 10**9)
    assert str(caught.value) == (
        f"{tmp_path}/hf/hub: needs 62.0 GB more (and 2.0 GB left free), but {tmp_path} has 40.0 GB free "
        "(free some space, or point HF_CACHE at a bigger disk (vars.env or the environment))")
    pull.check_disk(10 * 10**9, tmp_path, free=lambda _: 40 * 10**9)


def test_a_locally_built_model_has_nothing_to_pull(run_cli: Callable[..., Result], cli_env: dict[str, str]) -> None:
    result = run_cli("pull", "tiny-cpu", env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "tiny-cpu: built on this machine into .local/models/tiny-cpu (./runMe.sh install), " \
                            "nothing to pull\n"


def test_an_unknown_repository_says_so(run_cli: Callable[..., Result], write_model: WriteModel,
                                       cli_env: dict[str, str]) -> None:
    write_model("missing", MODEL_FILE.replace(REPO_ID, "h18b/missing"))
    result = run_cli("pull", "missing", env=cli_env)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: h18b/missing: no such model at {cli_env['HF_ENDPOINT']}")


def test_an_unreachable_hub_says_which_and_what_to_do(run_cli: Callable[..., Result], write_model: WriteModel,
                                                      tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_model("standin", MODEL_FILE)
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_CACHE": str(tmp_path / "hf")}
    result = run_cli("pull", "standin", env=env)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: {REPO_ID}: the hub at http://127.0.0.1:{port} did not answer: ")
    assert result.stderr.endswith("(check the network (or HF_ENDPOINT), then run `confgen pull` again)\n")
    assert "Traceback" not in result.output
    assert os.environ.get("HF_ENDPOINT") != env["HF_ENDPOINT"]
