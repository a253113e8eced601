"""Monitoring at run time: the local stack's optional Prometheus (Debian's package), the gateway's
metric files, and what the Docker monitoring profile needs on the host."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from confgen.atomic import write_atomic
from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.render import prometheus
from confgen.runtime.rundir import RunDir

HOST = "127.0.0.1"  # no setting opens it: it shows every model's and key's traffic
READY_PATH = "/-/ready"
RETENTION = "7d"
GRAFANA_SECRET_FILE = "GRAFANA_ADMIN_PASSWORD"  # noqa: S105 - the file's name, not a value


def binary(environ: dict[str, str]) -> str:
    found = shutil.which("prometheus", path=environ.get("PATH"))
    if found is None:
        raise ConfgenError.one("--monitoring (MONITORING)", "the prometheus command is not installed",
                               "apt-get install prometheus (Debian), or start without --monitoring")
    return found


def multiproc_dir(run: RunDir) -> Path:
    """Where the gateway's workers write their samples, so one scrape sums all of them (per stack:
    LiteLLM's own default is one folder in /tmp, shared and wiped by every stack on the machine)."""
    return run.scratch / "prometheus-multiproc"


def write_config(selection: Selection, run: RunDir) -> Path:
    path = run.generated / "prometheus.yml"
    write_atomic(path, prometheus.render(selection)["prometheus.yml"])
    return path


def argv(exe: str, config: Path, run: RunDir, port: int) -> list[str]:
    return [exe, f"--config.file={config}", f"--storage.tsdb.path={run.path / 'prometheus'}",
            f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address={HOST}:{port}"]


def prepare_docker(project: Project, out: Path) -> list[str]:
    """What docker-compose.monitoring.yml mounts and Docker would otherwise create as root: the data
    folders (owned by the user who runs this, as the containers are) and Grafana's admin password."""
    created = []
    for folder in (out / "prometheus-data", out / "grafana-data"):
        if not folder.is_dir():
            folder.mkdir(parents=True)
            created.append(str(folder))
    password = project.secrets_dir / GRAFANA_SECRET_FILE
    if not password.exists():
        write_atomic(password, secrets.token_urlsafe(24) + "\n", mode=0o600)
        created.append(f"{project.rel(password)} (mode 0600)")
    return created
