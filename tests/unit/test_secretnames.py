"""confgen.secretnames: secret-looking variables are refused with a value in vars.env or a model's env, so
their values never reach a generated file; an empty value asks vLLM's launch for secrets/<NAME>."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confgen.catalog import load_all, select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.runtime import entrypoint, secret_files
from confgen.secretnames import looks_secret

REPO = Path(__file__).resolve().parents[2]
WriteModel = Callable[[str, Any], Path]
WriteSecret = Callable[[str, str], Path]
WHAT = "looks like a secret (its name has {word}): its value would be copied in clear into generated files such "\
       "as models.yml"


@pytest.mark.parametrize(("name", "secret"), [
    ("HF_TOKEN", True), ("OPENAI_API_KEY", True), ("WANDB_API_KEY", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("DB_PASSWORD", True), ("MYSQL_PASSWD", True), ("GOOGLE_CREDENTIALS", True), ("AZURE_CREDENTIAL", True),
    ("MY_APIKEY", True), ("KEY", True), ("hf_token", True), ("TOKEN_FOR_HUB", True),
    # not whole words, or the name of where a secret is kept
    ("KEYCLOAK_URL", False), ("MONKEY_MODE", False), ("TOKENIZERS_PARALLELISM", False), ("LITELLM_MAX_TOKENS", False),
    ("HF_TOKEN_PATH", False), ("SSL_KEY_FILE", False), ("GNUPG_KEY_DIR", False), ("PASSWORDLESS", False),
    ("VLLM_USE_V1", False), ("NCCL_IB_DISABLE", False), ("HF_HUB_ENABLE_HF_TRANSFER", False),
])
def test_looks_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_a_value_in_a_model_env_is_refused(project: Project, write_model: WriteModel,
                                           tiny_doc: dict[str, Any]) -> None:
    tiny_doc["env"].update(HF_TOKEN="hf_abc", WANDB_API_KEY="w", HF_TOKEN_PATH="/x", EMPTY_TOKEN="")
    write_model("tiny-cpu", tiny_doc)
    with pytest.raises(ConfgenError) as caught:
        select(project, ["tiny-cpu"], {})
    assert [str(p) for p in caught.value.problems] == [
        f"models/tiny-cpu.yml: env.HF_TOKEN: {WHAT.format(word='TOKEN')} (put it in secrets/HF_TOKEN instead and "
        "leave HF_TOKEN empty here: vLLM gets it from that file)",
        f"models/tiny-cpu.yml: env.WANDB_API_KEY: {WHAT.format(word='KEY')} (put it in secrets/WANDB_API_KEY "
        "instead and leave WANDB_API_KEY empty here: vLLM gets it from that file)",
    ]


def test_a_value_in_vars_env_is_refused_with_its_line(project: Project) -> None:
    project.vars_env.write_text("LITELLM_PORT=4000\n# a comment\nOPENAI_API_KEY=sk-abc\nKEY_CACHE_TTL=5\n")
    with pytest.raises(ConfgenError) as caught:
        select(project, ["tiny-cpu"], {})
    assert [str(p) for p in caught.value.problems] == [
        f"vars.env: line 3: OPENAI_API_KEY: {WHAT.format(word='KEY')} (put it in secrets/OPENAI_API_KEY instead "
        "and leave OPENAI_API_KEY empty here: vLLM gets it from that file)",
    ]  # KEY_CACHE_TTL is a setting, never copied into a generated file


def test_the_environment_filling_an_empty_one_is_refused(project: Project) -> None:
    project.vars_env.write_text("HF_TOKEN=\n")
    assert select(project, ["tiny-cpu"], {}).models[0].env["HF_TOKEN"] == ""
    with pytest.raises(ConfgenError) as caught:
        select(project, ["tiny-cpu"], {"HF_TOKEN": "hf_abc"})
    assert [str(p) for p in caught.value.problems] == [
        f"environment: HF_TOKEN (named in vars.env line 1): {WHAT.format(word='TOKEN')} (put it in "
        "secrets/HF_TOKEN instead and unset it in the environment, or drop it from vars.env)",
    ]


def test_check_reports_it_with_the_other_problems(run_cli: Callable[..., Any], write_model: WriteModel,
                                                  tiny_doc: dict[str, Any]) -> None:
    tiny_doc["env"]["DB_PASSWORD"] = "pw"
    write_model("tiny-cpu", tiny_doc)
    result = run_cli("check", "--no-vllm")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: models/tiny-cpu.yml: env.DB_PASSWORD: {WHAT.format(word='PASSWORD')}")


def test_the_committed_catalog_holds_no_secret_value() -> None:
    _, problems = load_all(Project(REPO), {})
    assert [p for p in problems if "looks like a secret" in p.what] == []


def test_for_vllm_reads_the_named_ones_from_secrets(project: Project, write_secret: WriteSecret) -> None:
    for name in ("HF_TOKEN", "WANDB_API_KEY", "LITELLM_MASTER_KEY", "NOT_ASKED_TOKEN"):
        write_secret(name, f"value-of-{name}")
    env = {"WANDB_API_KEY": "", "LITELLM_MASTER_KEY": "", "OTHER_TOKEN": "", "PLAIN": ""}
    assert secret_files.for_vllm(project, env) == {"HF_TOKEN": "value-of-HF_TOKEN",
                                                   "WANDB_API_KEY": "value-of-WANDB_API_KEY"}


def test_vllm_gets_the_secret_and_models_yml_only_its_name(
    project: Project, write_model: WriteModel, tiny_doc: dict[str, Any], write_secret: WriteSecret, tmp_path: Path,
) -> None:
    write_secret("VLLM_API_KEY", "sk-vllm-0123456789abcdef")
    write_secret("WANDB_API_KEY", "w-0123456789abcdef")
    tiny_doc["env"]["WANDB_API_KEY"] = ""
    write_model("tiny-cpu", tiny_doc)
    out = tmp_path / "generated"
    launch = entrypoint.prepare(project, "tiny-cpu", out, {"PATH": "/bin"})
    assert launch.env["WANDB_API_KEY"] == "w-0123456789abcdef"
    models_yml = out / "models.yml"
    assert "WANDB_API_KEY: ''" in models_yml.read_text()
    assert "w-0123456789abcdef" not in models_yml.read_text()
    assert stat.S_IMODE(models_yml.stat().st_mode) == 0o600
