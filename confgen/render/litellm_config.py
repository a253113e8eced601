"""config.yaml for the LiteLLM proxy, rendered from litellm_config.template.yaml with Jinja2."""

from __future__ import annotations

import json

import jinja2
import yaml

from confgen.catalog import Selection
from confgen.errors import ConfgenError
from confgen.routing.plan import RoutePlan, plan_routes


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - renders YAML, not HTML
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    # JSON is YAML: every value goes through tojson, so no value can break the document.
    env.filters["tojson"] = _tojson
    return env


def _tojson(value: object) -> str:
    if isinstance(value, jinja2.Undefined):
        # json.dumps would raise a bare TypeError; name the missing value like the rest of Jinja.
        value._fail_with_undefined_error()
    try:
        return json.dumps(value)
    except TypeError as exc:
        raise jinja2.TemplateRuntimeError(f"tojson cannot write this value: {exc}") from None


def render(selection: Selection, routes: RoutePlan | None = None) -> dict[str, str]:
    """`routes`: a routing plan other than the project's deployments.yml (confgen k8s: one Service per model)."""
    where = selection.project.rel(selection.project.template)
    try:
        source = selection.project.template.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfgenError.one(where, f"cannot read the template: {exc}", "restore it from git") from None
    routes = routes or plan_routes(selection)  # deployments.yml, validated against the catalog
    try:
        template = _environment().from_string(source)
        text = template.render(models=selection.models, settings=selection.gvars.settings, routing=routes)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfgenError.one(f"{where}: line {exc.lineno}", f"template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ConfgenError.one(where, f"template uses an unknown value: {exc.message}",
                               "use models[i].<field>, settings.<NAME> or routing.<field>") from None
    except jinja2.TemplateError as exc:
        raise ConfgenError.one(where, f"template error: {exc.message}",
                               "pass plain values (strings, numbers) through tojson") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfgenError.one(where, f"renders to invalid YAML: {exc}", "check the template's indentation") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_list"), list):
        raise ConfgenError.one(where, "the rendered config has no model_list", "keep the model_list loop")
    return {"config.yaml": text}
