"""Container health checks (seed 004): the vLLM node is healthy when its config is written and
/v1/models answers with the key and lists the model; the gateway when /health/liveliness answers."""

from __future__ import annotations

from pathlib import Path

import httpx

from confgen.catalog import select
from confgen.load import Project, load_vars
from confgen.runtime import secret_files

TIMEOUT_S = 5.0


def _reach(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - compared, not bound


def vllm(project: Project, model: str, out: Path, environ: dict[str, str]) -> tuple[bool, str]:
    if not (out / "config.yaml").is_file():
        return False, f"{out / 'config.yaml'} not written yet"
    resolved = select(project, [model], environ, source="MODEL").models[0]
    key = secret_files.require(project, ("VLLM_API_KEY",))["VLLM_API_KEY"]
    url = f"{resolved.api_base}/models"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    if resp.status_code != 200:
        return False, f"{url}: HTTP {resp.status_code}"
    ids = [m.get("id") for m in resp.json().get("data", [])]
    if resolved.served_name not in ids:
        return False, f"{url}: {resolved.served_name!r} not listed (got {ids})"
    return True, f"{resolved.served_name} ready at {resolved.api_base}"


def gateway(project: Project, environ: dict[str, str]) -> tuple[bool, str]:
    settings = load_vars(project, environ).settings
    url = f"http://{_reach(settings.LITELLM_HOST)}:{settings.LITELLM_PORT}/health/liveliness"
    try:
        resp = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    return resp.status_code == 200, f"{url}: HTTP {resp.status_code}"


def main(argv: list[str]) -> int:
    """`python -m confgen.runtime.health vllm|gateway`: the compose health checks, without loading the
    whole CLI (a check that takes seconds to import times out on a busy machine)."""
    import os

    environ = dict(os.environ)
    project = Project(Path(environ.get("CONFGEN_ROOT", "/app")))
    if argv[1:] == ["vllm"]:
        out = Path(environ.get("CONFGEN_OUT", "/app/generated_configs"))
        ok, detail = vllm(project, environ.get("MODEL", "glm47-flash"), out, environ)
    elif argv[1:] == ["gateway"]:
        ok, detail = gateway(project, environ)
    else:
        print("usage: python -m confgen.runtime.health vllm|gateway")
        return 2
    print(f"{'healthy' if ok else 'unhealthy'}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
