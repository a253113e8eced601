"""confgen controller: the on-demand controller of this host (started by ./runMe.sh for an on-demand
deployment): owns the model servers of deployments.yml's `on_demand:` and serves its API on 127.0.0.1. With
`--runner docker` each model server is a container of the vLLM node image (confgen/runtime/docker_runner.py);
the controller runs on the host and uses the docker client (what that grants: docs/on-demand.md)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from confgen.commands import project_from
from confgen.controller.plan import load_plan
from confgen.errors import ConfgenError
from confgen.load import read_secrets
from confgen.routing.load import FILE_NAME
from confgen.runtime import docker_host, pull
from confgen.runtime.docker_runner import DockerRunner, vllm_container
from confgen.runtime.install import vllm_python
from confgen.runtime.rundir import RunDir
from confgen.runtime.runner import LocalRunner, Runner, ServerSpec, vllm_server


@click.command("controller")
@click.option("--runner", type=click.Choice(["local", "docker"]), default="local", show_default=True,
              envvar="CONFGEN_CONTROLLER_RUNNER", help="Model servers as local processes (the CPU stack) or as "
              "containers of --image (GPU hosts).")
@click.option("--image", default="confgen/vllm-node:latest", show_default=True, envvar="CONFGEN_VLLM_NODE_IMAGE",
              help="The vLLM node image the Docker runner starts (docker compose build makes it).")
@click.pass_context
def command(ctx: click.Context, runner: str, image: str) -> int:
    """Run the on-demand controller in the foreground (its run folder: $CONFGEN_RUN_DIR or run/)."""
    import uvicorn  # the gateway venv's; the rest of confgen does not need it

    from confgen.controller.api import app, ensure_token
    from confgen.controller.core import Controller

    project = project_from(ctx)
    environ = dict(os.environ)
    plan = load_plan(project, environ)
    if plan is None or plan.selection is None:
        raise ConfgenError.one(FILE_NAME, "has no enabled on_demand section",
                               "add one (docs/on-demand.md), or start the stack without the controller")
    run = RunDir.for_root(project.root, environ)
    names = [m.name for m in plan.selection.models]
    owner: Runner[Any]
    if runner == "docker":
        docker = DockerRunner(docker_host.find_docker(environ), environ, prefix="confgen-ondemand")
        specs: dict[str, ServerSpec] = {}
        for m in plan.selection.models:
            share = plan.members[m.name].share_pct / 100
            args = f"--gpu-memory-utilization {share:.2f}" if m.info.device == "gpu" else ""
            specs[m.name], docker.containers[f"vllm-{m.name}"] = vllm_container(
                project.root, run, m, image=image, hf_cache=pull.cache_root(environ), vllm_args=args, routes=names)
        owner = docker
    else:
        python = vllm_python(project)
        specs = {m.name: vllm_server(project.root, run, m, python=python, environ=environ, name=f"vllm-{m.name}",
                                     routes=names) for m in plan.selection.models}
        owner = LocalRunner()
    token = ensure_token(run.path).read_text(encoding="utf-8").strip()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("controller: %(message)s"))
    logger = logging.getLogger("confgen.controller")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("%d models on %s (budget %.1f GB), swap by %s: %s", len(specs), plan.gpu.name, plan.budget_gb,
                plan.swap, plan.swap_reason)
    controller = Controller(plan, specs, owner, api_key=read_secrets(project).get("VLLM_API_KEY"))
    uvicorn.run(app(controller, token), host="127.0.0.1", port=plan.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0
