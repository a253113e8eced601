"""The gateway container's entrypoint: wait for the config the vLLM node rendered, secrets from files, exec LiteLLM.

It renders nothing: every vLLM node writes the same config.yaml into the shared tmpfs volume, and
compose starts the gateway only once they are healthy. Secrets come as files (compose `secrets:`,
mounted in /run/secrets) and reach LiteLLM through its environment, never argv or the config.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from confgen.errors import ConfgenError, LaunchError
from confgen.gateway.config import ENV
from confgen.load import Project, load_vars
from confgen.runtime import datastores, gateway_tuning, ports, secret_files
from confgen.runtime.rundir import RunDir

REQUIRED = ("LITELLM_MASTER_KEY", "VLLM_API_KEY")
# Optional: the PostgreSQL password of the usage ledger; libpq (psycopg) reads PGPASSWORD itself, so
# the connection URL in the compose file carries no secret.
OPTIONAL = {"POSTGRES_PASSWORD": "PGPASSWORD"}


@dataclass(frozen=True)
class GatewayLaunch:
    argv: list[str]
    env: dict[str, str]


def wait_for_config(config: Path, wait_s: float, poll_s: float = 0.5) -> None:
    """The config appears when a vLLM node starts; compose's health ordering normally makes this instant."""
    deadline = time.monotonic() + wait_s
    while not config.is_file():
        if time.monotonic() >= deadline:
            raise LaunchError(str(config), f"not written after {wait_s:.0f} s",
                              "the vLLM node writes it at start-up: see `docker compose logs vllm-node`")
        time.sleep(poll_s)


def read_secret_files(folder: Path) -> dict[str, str]:
    """The required secrets (one error listing each missing or weak one) and the optional ones, as env."""
    project = Project(folder.parent) if folder.name == "secrets" else None
    if project is None:
        raise ConfgenError.one(str(folder), "the secrets folder must be named 'secrets'",
                               "mount them at /run/secrets (compose `secrets:`)", exit_code=2)
    env = secret_files.require(project, REQUIRED)
    for name, var in OPTIONAL.items():
        value = secret_files.optional(project, (name,)).get(name)
        if value:
            env[var] = value
    return env


def store_settings(environ: dict[str, str]) -> dict[str, str]:
    """The compose file names the stores as the gateway reads them (CONFGEN_DATABASE_URL, ...), never as
    DATABASE_URL; the settings that datastores.prepare takes use the vars.env names."""
    env = dict(environ)
    for setting, var in (("DATABASE_URL", ENV["database_url"]), ("REDIS_URL", ENV["redis_url"])):
        if environ.get(var):
            env[setting] = environ[var]
    return env


def prepare(project: Project, config: Path, secrets_dir: Path, environ: dict[str, str],
            *, wait_s: float, state_dir: Path) -> GatewayLaunch:
    settings = load_vars(project, store_settings(environ)).settings
    secrets = read_secret_files(secrets_dir)
    wait_for_config(config, wait_s)
    if "PGPASSWORD" in secrets:
        os.environ["PGPASSWORD"] = secrets["PGPASSWORD"]  # libpq reads it: the migrations below connect
    # Database created and migrated, Redis checked (never fatal: the gateway degrades and says so);
    # the ledger's spool and the key snapshot live in the state volume, so restarts lose no rows.
    stores = datastores.prepare(settings, RunDir(state_dir))
    if environ.get(ENV["spool_dir"]):  # a spool folder the deployment names wins (the k8s manifest's emptyDir)
        stores[ENV["spool_dir"]] = environ[ENV["spool_dir"]]
    host, port = settings.LITELLM_HOST, settings.LITELLM_PORT
    # LiteLLM silently moves to a random port when its own is taken (FINDINGS).
    ports.ensure_free(host, port, "gateway", "LITELLM_PORT")
    env = {**environ, **secrets, **stores, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)  # with it set and Prisma missing, the proxy exits (FINDINGS)
    if settings.LITELLM_NUM_WORKERS > 1 and "PROMETHEUS_MULTIPROC_DIR" not in env:
        metrics = Path(env.get("TMPDIR", "/tmp")) / "prometheus-multiproc"  # noqa: S108 - the container's own /tmp
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    for name, value in gateway_tuning.WORKER_ENV.items():  # workers get time to start on a busy machine
        env.setdefault(name, value)
    litellm = Path(sys.executable).parent / "litellm"
    argv = [str(litellm), "--config", str(config), "--host", host, "--port", str(port),
            "--num_workers", str(settings.LITELLM_NUM_WORKERS),
            *gateway_tuning.proxy_args(Path(env.get("TMPDIR", "/tmp")))]  # noqa: S108 - the container's own /tmp
    return GatewayLaunch(argv=argv, env=env)


def exec_gateway(launch: GatewayLaunch, cwd: Path) -> None:
    if not Path(launch.argv[0]).is_file():
        raise LaunchError(launch.argv[0], "LiteLLM is not installed next to this Python",
                          "use the gateway image (Dockerfile.gateway) or the project's .venv")
    sys.stdout.write(f"confgen: starting the LiteLLM gateway: {' '.join(launch.argv)}\n")
    sys.stdout.flush()
    os.chdir(cwd)
    os.execve(launch.argv[0], launch.argv, launch.env)  # noqa: S606 - argv is a list, no shell
