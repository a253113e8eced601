"""confgen controller: the on-demand controller of this host (started by ./runMe.sh for an on-demand
deployment): owns the model servers of deployments.yml's `on_demand:` and serves its API on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import sys

import click

from confgen.commands import project_from
from confgen.controller.plan import load_plan
from confgen.errors import ConfgenError
from confgen.load import read_secrets
from confgen.routing.load import FILE_NAME
from confgen.runtime.install import vllm_python
from confgen.runtime.rundir import RunDir
from confgen.runtime.runner import vllm_server


@click.command("controller")
@click.pass_context
def command(ctx: click.Context) -> int:
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
    python = vllm_python(project)
    names = [m.name for m in plan.selection.models]
    specs = {m.name: vllm_server(project.root, run, m, python=python, environ=environ, name=f"vllm-{m.name}",
                                 routes=names) for m in plan.selection.models}
    token = ensure_token(run.path).read_text(encoding="utf-8").strip()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("controller: %(message)s"))
    logger = logging.getLogger("confgen.controller")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("%d models on %s (budget %.1f GB), swap by %s: %s", len(specs), plan.gpu.name, plan.budget_gb,
                plan.swap, plan.swap_reason)
    controller = Controller(plan, specs, api_key=read_secrets(project).get("VLLM_API_KEY"))
    uvicorn.run(app(controller, token), host="127.0.0.1", port=plan.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0
