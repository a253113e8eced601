"""Which models and ports `doctor` looks at, all its findings in order, and the part `up` runs first."""

from __future__ import annotations

import click

from confgen.catalog import select
from confgen.doctor import Finding, checks
from confgen.errors import ConfgenError, LaunchError
from confgen.load import Project, load_vars
from confgen.merge import ResolvedModel
from confgen.runtime import docker
from confgen.runtime import host as host_mod
from confgen.runtime.rundir import RunDir, ours


def selected(project: Project, environ: dict[str, str], info: host_mod.HostInfo) -> list[ResolvedModel]:
    """The models ./runMe.sh would start (MODELS, MODEL, else the default by hardware); [] if one is unknown."""
    from confgen.runtime.stack import choose_model  # the stack builds on doctor's preflight

    names, source = docker.model_names(environ, choose_model(environ, info)[0])
    try:
        return list(select(project, names, environ, source=source).models)
    except ConfgenError:
        return []  # `up` says what is wrong with the name; the other checks still help


def _ports(project: Project, environ: dict[str, str], models: list[ResolvedModel]) -> list[Finding]:
    settings = load_vars(project, environ).settings
    state = RunDir.for_root(project.root, environ).read()
    running = state is not None and any(ours(p) for p in state.procs)
    found = [checks.port(settings.LITELLM_HOST, settings.LITELLM_PORT, "gateway", "LITELLM_PORT", running)]
    found += [checks.port(m.host, m.port, f"vLLM {m.name}", f"serve.port in {m.file}", running) for m in models
              if m.info.device == "cpu"]  # GPU models run in containers: their port is the container's
    return found


def cheap(project: Project, environ: dict[str, str], info: host_mod.HostInfo,
          models: list[ResolvedModel]) -> list[Finding]:
    """What `up` checks first: the disk (the venvs, the weights). Python is runMe.sh's; ports, PostgreSQL and
    Redis are checked (and said) by `up` itself."""
    cpu = not info.gpu or any(m.info.device == "cpu" for m in models)
    return [checks.disk_venvs(project, cpu=cpu), *checks.disk_weights(project, models, environ)]


def run_all(project: Project, environ: dict[str, str]) -> list[Finding]:
    info = host_mod.detect()
    models = selected(project, environ, info)
    settings = load_vars(project, environ).settings
    return [checks.python(environ), *cheap(project, environ, info, models), *checks.models_fit_host(models, info),
            *_ports(project, environ, models),
            checks.postgres(settings, environ), checks.redis_check(settings), *checks.gpu(info, environ),
            *checks.hf_token(project, models, environ)]


def preflight(project: Project, environ: dict[str, str], info: host_mod.HostInfo) -> None:
    """`up`'s first step: the cheap checks; a warning is said, a failure stops the start with its fix."""
    findings = cheap(project, environ, info, selected(project, environ, info))
    for finding in findings:
        if finding.state == "warn":
            click.echo(f"warning: {finding.check}: {finding.detail} ({finding.fix})", err=True)
    failed = [f for f in findings if f.state == "fail"]
    if failed:
        raise LaunchError(f"confgen doctor: {failed[0].check}", failed[0].detail,
                          failed[0].fix + ("; ./runMe.sh doctor lists every check" if failed[0].fix else ""))
