"""Run the gateway pod of the generated manifests on this machine, as close to the cluster as loopback allows.

No cluster can run here, so the Deployment's container is started from what the manifests say: its env
(Secret references resolved from a dict), its volumes laid out as folders (ConfigMap data, projected Secret
files from secrets/, emptyDirs), and the Service DNS names in its config resolved to 127.0.0.1:
- as a local process (`pod.process_argv`): inside `unshare --mount`, with a private /etc/hosts bind-mounted
  over the machine's (needs root, which CI has), running `confgen exec-gateway` like the image's entrypoint;
- in the gateway image (`pod.docker_argv`): `docker run --network host --add-host <name>:127.0.0.1`, the
  folders bind-mounted at the manifest's mount paths, the manifest's command as the entrypoint.

The only changes to the manifest's pod: LITELLM_HOST/LITELLM_PORT (host networking on a shared machine:
bind 127.0.0.1 and a test port) and CONFGEN_REDIS_PREFIX (a key prefix of the test's own).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s_support import Obj, containers, find, pod_spec

ROOT = Path(__file__).resolve().parents[2]
_SERVICE_NAME = re.compile(r"\b[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local\b")


@dataclass
class GatewayPod:
    folder: Path  # the pod's volumes as folders, by mount path below it
    env: dict[str, str]
    mounts: dict[str, Path]  # mount path in the container -> folder or file here
    tmpfs: list[str]  # emptyDir mount paths
    command: list[str]
    hosts: list[str]  # Service DNS names the pod uses
    read_only_root: bool = False

    def host_path(self, path: str) -> Path:
        """Where a container path lies here (for the local process)."""
        for mount, here in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return here / path[len(mount):].lstrip("/") if path != mount else here
        raise AssertionError(f"{path} is on no volume of the pod")

    def hosts_file(self) -> Path:
        path = self.folder / "etc-hosts"
        path.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in self.hosts))
        return path

    def process_argv(self) -> tuple[list[str], dict[str, str]]:
        """The image's entrypoint (confgen exec-gateway), its paths moved onto the folders, in a mount namespace
        whose /etc/hosts maps the Service names to loopback."""
        config = self.host_path("/app/generated_configs/config.yaml")
        exec_gateway = [sys.executable, "-m", "confgen", "--root", str(self.host_path("/app/vars.env").parent),
                        "exec-gateway", "--config", str(config), "--secrets", str(self.host_path("/run/secrets"))]
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(self.hosts_file()),
                *exec_gateway]
        env = {**os.environ, **self.env}
        for name in ("CONFGEN_LEDGER_SPOOL", "TMPDIR"):
            env[name] = str(self.host_path(self.env[name]))
        env.pop("CONFGEN_ROOT", None)
        return argv, env

    def docker_argv(self, docker: str, image: str, name: str) -> list[str]:
        argv = [docker, "run", "--detach", "--name", name, "--network", "host", "--init",
                "--user", "1000:1000", "--entrypoint", self.command[0]]
        argv += [f"--add-host={h}:127.0.0.1" for h in self.hosts]
        if self.read_only_root:
            argv.append("--read-only")
        for mount, here in self.mounts.items():
            if mount not in self.tmpfs:
                argv += ["--volume", f"{here}:{mount}:ro"]
        for mount in self.tmpfs:
            argv += ["--tmpfs", f"{mount}:rw,mode=1777"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, image, *self.command[1:]]


def gateway_pod(objs: list[Obj], folder: Path, secret_refs: dict[tuple[str, str], str], secrets_dir: Path,
                overrides: dict[str, str]) -> GatewayPod:
    """The gateway Deployment's container, laid out in `folder`. `secret_refs`: (Secret, key) -> value for env
    references; projected Secret volumes take their files from `secrets_dir` (the project's secrets/)."""
    deployment = find(objs, "Deployment", "gateway")
    (container,) = containers(deployment)
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_refs[(ref["name"], ref["key"])]
    env.update(overrides)
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts: dict[str, Path] = {}
    tmpfs: list[str] = []
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        here = folder / mount["mountPath"].lstrip("/")
        _lay_out(objs, volume, mount, here, secrets_dir)
        mounts[mount["mountPath"]] = here
        if "emptyDir" in volume:
            tmpfs.append(mount["mountPath"])
    config = find(objs, "ConfigMap", "gateway-config")["data"]["config.yaml"]
    hosts = sorted(set(_SERVICE_NAME.findall(config + " ".join(env.values()))))
    read_only = bool(container.get("securityContext", {}).get("readOnlyRootFilesystem"))
    return GatewayPod(folder, env, mounts, tmpfs, list(container["command"]), hosts, read_only)


def _lay_out(objs: list[Obj], volume: Obj, mount: Obj, here: Path, secrets_dir: Path) -> None:
    files: dict[str, str] = {}
    if "configMap" in volume:
        files = dict(find(objs, "ConfigMap", volume["configMap"]["name"])["data"])
    elif "projected" in volume:
        for source in volume["projected"]["sources"]:
            for item in source["secret"]["items"]:
                value = secrets_dir / item["key"]
                if value.is_file() or not source["secret"].get("optional"):
                    files[item["path"]] = value.read_text()
    if "subPath" in mount:
        here.parent.mkdir(parents=True, exist_ok=True)
        here.write_text(files[mount["subPath"]])
        _readable(here)
        return
    here.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (here / name).write_text(text)
        _readable(here / name)
    os.chmod(here, 0o1777 if "emptyDir" in volume else 0o755)


def _readable(path: Path) -> None:
    """Like the volume's defaultMode with the pod's fsGroup: the image's user (1000) reads it, no one else."""
    if os.geteuid() == 0:
        os.chown(path, 0, 1000)
    os.chmod(path, 0o440)


def service_hosts(config: dict[str, Any]) -> list[str]:
    return [m["litellm_params"]["api_base"].split("/")[2].split(":")[0] for m in config["model_list"]]
