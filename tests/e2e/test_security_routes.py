"""A hostile client against one real gateway (our custom_auth and ledger callback, the rendered config, two
served models on two simulators, the machine's PostgreSQL and Redis): every route the RUNNING LiteLLM app
mounts, every method, with a user API key allowed only model A, then a bounded schemathesis fuzz of the
gateway's own OpenAPI description. docs/security.md says what these tests hold and what they found.

The running app is the source of the routes: LiteLLM mounts many of its routers lazily, so importing
proxy_server shows only part of them; GET /openapi.json on the running gateway lists them all (routes
mounted with include_in_schema=False are not in it).

Ports: gateway 14720, simulators 18720-18721.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from confgen.gateway.requestmodel import ROUTES
from tests.e2e.keys_support import (
    MASTER_KEY,
    MODEL,
    VLLM_KEY,
    Gateway,
    create_key,
    redis_namespace,
    render_config,
    scratch_database,
)
from tests.simproc import SimProc, running_sim

pytestmark = pytest.mark.e2e
PORT, SIM_A, SIM_B = 14720, 18720, 18721
A, B = MODEL, "other-model"
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Path parameters that name a model (LiteLLM's {model} routes, /v1/models/{model_id}, /model/{model_name}...).
MODEL_PARAMS: Final = frozenset({"model", "model_name", "model_id"})
# The routes an API key may call, spelled as OpenAPI spells them ({model}, not {model:path}).
OPEN_TO_KEYS: Final = frozenset(route.replace(":path}", "}") for route in ROUTES)
INFERENCE: Final = frozenset(route.replace(":path}", "}") for route, kind in ROUTES.items() if kind == "inference")
# Routes LiteLLM serves WITHOUT calling custom_auth at all: any network neighbour gets these answers, with or
# without a key. Path or prefix (ending in "/") -> what it is. A route that answers 2xx without a key and is
# not here fails the tests: a LiteLLM upgrade that opens a route must be looked at.
PUBLIC: Final[dict[str, str]] = {
    "/": "LiteLLM's landing page (HTML, links to /docs)",
    "/health/liveliness": "liveness probe, 'I'm alive!'",
    "/health/liveness": "liveness probe, 'I'm alive!'",
    "/health/readiness": "readiness probe: status and whether LiteLLM's own database is connected",
    "/public/": "LiteLLM's model-hub pages: its provider catalogue, cost map, blog posts; empty hub lists here",
    "/get/ui_theme_settings": "admin UI theme (logo URLs), null here",
    "/.well-known/": "OAuth/OIDC discovery documents and an empty JWKS; no secrets",
    "/litellm/.well-known/litellm-ui-config": "admin UI bootstrap flags (SSO configured or not)",
    "/register": "MCP OAuth dynamic client registration stub: answers a fixed dummy client, stores nothing",
    "/{mcp_server_name}/register": "the same stub per MCP server name",
    "/api/event_logging/batch": "Claude Code telemetry sink: accepts and drops the body",
}
CHAT: Final = {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_database() as database:
        yield database


@dataclass(frozen=True)
class Served:
    gateway: Gateway
    sim_b: SimProc
    key: str  # a user key allowed only model A

    def requests_to_b(self) -> int:
        count: int = self.sim_b.stats()["requests"]
        return count


@pytest.fixture(scope="module")
def served(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("security")
    config = render_config(folder / "generated", SIM_A, also={B: SIM_B})
    flags = ("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", "--max-num-seqs", "256")
    env = {"VLLM_API_KEY": VLLM_KEY}
    with (running_sim(SIM_A, "--served-model-name", A, *flags, env=env),
          running_sim(SIM_B, "--served-model-name", B, *flags, env=env) as sim_b, redis_namespace() as namespace):
        gw = Gateway(PORT, config, folder / "gw", url, namespace, 1.0)
        try:
            gw.start()
            yield Served(gw, sim_b, create_key(url, "--alias", "only-a", "--models", A)["key"])
        finally:
            gw.stop()
            log = gw.log_text()
            assert MASTER_KEY not in log
            assert VLLM_KEY not in log


@pytest.fixture(scope="module")
def openapi(served: Served) -> dict[str, Any]:
    answer = httpx.get(f"{served.gateway.url}/openapi.json", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                       timeout=60)
    assert answer.status_code == 200, answer.text[:300]
    spec: dict[str, Any] = answer.json()
    return spec


def fill(template: str, model: str) -> str:
    """The template with its model parameters set to `model` and every other parameter to a dummy value."""
    return re.sub(r"\{([^}]+)\}", lambda m: model if m.group(1) in MODEL_PARAMS else f"dummy-{m.group(1)}",
                  template)


def body_for(template: str) -> dict[str, Any]:
    """A request body model A would answer on `template` (and what a management route gets as well)."""
    if template.endswith("embeddings"):
        return {"model": A, "input": "hi"}
    if template.endswith("completions") and not template.endswith("chat/completions"):
        return {"model": A, "prompt": "hi", "max_tokens": 4}
    if template.endswith("responses"):
        return {"model": A, "input": "hi", "max_output_tokens": 4}
    if template.endswith("count_tokens"):
        return {"model": A, "messages": CHAT["messages"]}
    return {"model": A, **CHAT}


def public(template: str) -> bool:
    return template in PUBLIC or any(entry.endswith("/") and template.startswith(entry) for entry in PUBLIC)


@dataclass(frozen=True)
class Probe:
    method: str
    template: str
    declared: bool  # the method is in the OpenAPI description of the path
    model: str


def probes(spec: dict[str, Any]) -> list[Probe]:
    """Every (method, path) once, and once more with model B where the path names a model."""
    found = []
    for template, item in spec["paths"].items():
        models = (A, B) if any(p in MODEL_PARAMS for p in re.findall(r"\{([^}]+)\}", template)) else (A,)
        found += [Probe(method, template, method.lower() in item, model) for method in METHODS for model in models]
    return found


def client_for(served: Served, **options: Any) -> httpx.Client:
    """No keep-alive: a connection LiteLLM drops after an unhandled error would fail the next request too."""
    return httpx.Client(base_url=served.gateway.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0),
                        **options)


def send(client: httpx.Client, probe: Probe, key: str | None) -> int | str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = body_for(probe.template) if probe.method in {"POST", "PUT", "PATCH"} else None
    try:
        return client.request(probe.method, fill(probe.template, probe.model), headers=headers, json=body).status_code
    except httpx.TransportError as exc:  # the server dropped the connection: as bad as a 5xx
        return type(exc).__name__


def verdict(probe: Probe, with_key: int | str, without_key: int | str) -> str | None:
    """What is wrong with the two answers to `probe`, or None."""
    if isinstance(with_key, str) or with_key >= 500:
        return f"user key -> {with_key}"
    if isinstance(without_key, str) or without_key >= 500:
        return f"no key -> {without_key}"
    if 200 <= without_key < 300 and not public(probe.template):
        return f"no key -> {without_key}: a route open to anyone, not listed in PUBLIC"
    allowed = probe.template in OPEN_TO_KEYS and probe.model == A
    if 200 <= with_key < 300 and not allowed and not (public(probe.template) and 200 <= without_key < 300):
        return f"user key -> {with_key} on a route API keys may not call (or with model {probe.model})"
    return None


def test_every_mounted_route_refuses_a_user_key(served: Served, openapi: dict[str, Any],
                                                record_property: Callable[[str, object], None]) -> None:
    every = probes(openapi)
    before = served.requests_to_b()
    with_key: Counter[int | str] = Counter()
    without_key: Counter[int | str] = Counter()
    problems = []
    with client_for(served) as client:
        for probe in every:
            keyed, anonymous = send(client, probe, served.key), send(client, probe, None)
            with_key[keyed] += 1
            without_key[anonymous] += 1
            wrong = verdict(probe, keyed, anonymous)
            if wrong:
                problems.append(f"{probe.method} {fill(probe.template, probe.model)}: {wrong}")
    paths = len(openapi["paths"])
    operations = sum(p.declared for p in every if p.model == A)
    record_property("figures", f"{paths} paths and {operations} operations in the running app's OpenAPI; "
                    f"{len(every)} probes (7 methods a path, model parameters as {A} and as {B}); statuses with "
                    f"a user key allowed only {A}: {dict(sorted(with_key.items(), key=str))}; with no key: "
                    f"{dict(sorted(without_key.items(), key=str))}; {len(problems)} wrong")
    assert served.requests_to_b() == before, f"model {B} was reached"
    assert not problems, f"{len(problems)} probes answered wrongly:\n" + "\n".join(problems)


def other_model_shapes() -> list[tuple[str, dict[str, Any], int]]:
    """(path, body, status) for every inference route: the ways to name model B, several models, or none."""
    shapes = []
    for template in sorted(INFERENCE):
        body = body_for(template)
        if "{model}" in template:
            shapes += [
                (fill(template, B), body, 403),  # LiteLLM serves the path's model whatever the body says
                (fill(template, B), {k: v for k, v in body.items() if k != "model"}, 403),
                (fill(template, B), {**body, "model": B}, 403),
                (fill(template, f"{A},{B}"), body, 400),
                (fill(template, f"{B},{A}"), body, 400),
            ]
        else:
            shapes += [
                (template, {**body, "model": B}, 403),
                (template, {k: v for k, v in body.items() if k != "model"}, 400),
                (template, {**body, "model": [A, B]}, 400),
                (template, {**body, "model": f"{A},{B}"}, 400),
                (template, {**body, "model": f"{B},{A}"}, 400),
                (template, {**body, "model": {"name": A}}, 400),
                (template, {**body, "model": ""}, 400),
                (template, {**body, "model": None}, 400),
            ]
    return shapes


def test_allowed_routes_refuse_every_other_way_to_name_a_model(served: Served,
                                                               record_property: Callable[[str, object], None]) -> None:
    before = served.requests_to_b()
    shapes = other_model_shapes()
    wrong = []
    seen: Counter[int] = Counter()
    with client_for(served, headers={"Authorization": f"Bearer {served.key}"}) as client:
        for path, body, status in shapes:
            answer = client.post(path, json=body)
            seen[answer.status_code] += 1
            if answer.status_code != status:
                wrong.append(f"POST {path} {json.dumps(body)[:120]}: {answer.status_code} (want {status}) "
                             f"{answer.text[:160]}")
        # The batch form of LiteLLM's path routes ("a,b" served by each model) and a list by the body.
        for template in sorted(t for t in INFERENCE if "{model}" in t):
            answer = client.post(fill(template, A), json={**body_for(template), "model": B})
            seen[answer.status_code] += 1
            if answer.status_code >= 300 and answer.status_code != 404:  # 404: the simulator serves no embeddings
                wrong.append(f"POST {fill(template, A)} with body model {B}: {answer.status_code} "
                             f"(the path's model {A} is the one served) {answer.text[:160]}")
    record_property("figures", f"{len(shapes)} other-model shapes on {len(INFERENCE)} inference routes, then "
                    f"model {A} by path with {B} in the body: statuses {dict(sorted(seen.items()))}; "
                    f"{len(wrong)} wrong")
    assert served.requests_to_b() == before, f"model {B} was reached"
    assert not wrong, "\n".join(wrong)


def raw_post(client: httpx.Client, path: str, content: str, headers: dict[str, str]) -> tuple[int | str, str]:
    """(status, body text) of a POST, or (the transport error's name, "") when the connection is dropped."""
    try:
        answer = client.post(path, content=content, headers=headers)
    except httpx.TransportError as exc:
        return type(exc).__name__, ""
    return answer.status_code, answer.text


def test_a_refusal_stays_a_4xx_whatever_the_body_holds(served: Served) -> None:
    """Bodies that are not objects, and LiteLLM's internal request fields sent by the client."""
    bodies: list[Any] = [None, [], 1, "x", True,  # JSON, but not an object
                         {"model": "c+", "input": "hi", "litellm_logging_obj": {"a": []}},
                         {"model": B, **CHAT, "litellm_logging_obj": {}},
                         {"model": B, **CHAT, "proxy_server_request": 1}]
    wrong = []
    with client_for(served, headers={"Content-Type": "application/json"}) as client:
        for key in (served.key, None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            for path in ("/v1/chat/completions", f"/engines/{B}/embeddings", "/key/generate"):
                for body in bodies:
                    status, text = raw_post(client, path, json.dumps(body), headers)
                    if isinstance(status, str) or not 400 <= status < 500:
                        wrong.append(f"POST {path} {'user key' if key else 'no key'} {json.dumps(body)[:80]}: "
                                     f"{status} {text[:120]}")
    assert not wrong, f"{len(wrong)} answers are not a 4xx:\n" + "\n".join(wrong)


def test_pass_through_routes_that_work_before_auth_are_not_served(served: Served) -> None:
    """Two pass-through routes work on the request before custom_auth runs (/langfuse/* decodes Authorization
    as Basic credentials, /vertex_ai/discovery/* builds its upstream URL from the path): a crafted request was
    a 500. This stack configures neither, so the edge answers 404 to everyone (confgen/gateway/edge.py)."""
    basic = base64.b64encode(f"pk-anything:{served.key}".encode()).decode()
    crafted = [("/langfuse/api/public/traces", f"Basic {basic}"), ("/langfuse/x", f"Bearer {served.key}"),
               ("/langfuse/x", "Basic !!"), ("/langfuse/x", f"Basic {base64.b64encode(b'no-colon').decode()}"),
               ("/langfuse/x", f"Bearer {MASTER_KEY}"), ("/vertex_ai/discovery/%0C", f"Bearer {served.key}"),
               ("/vertex_ai/discovery/a%0Db", ""), ("/vertex_ai/discovery/x", f"Bearer {MASTER_KEY}")]
    wrong = []
    with client_for(served) as client:
        for path, header in crafted:
            answer = client.get(path, headers={"Authorization": header} if header else {})
            if answer.status_code != 404 or "is not served by this gateway" not in answer.text:
                wrong.append(f"GET {path} Authorization: {header[:9]}...: {answer.status_code} {answer.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_the_master_key_reaches_only_what_the_stack_serves(served: Served) -> None:
    """Routes that need LiteLLM's database or a cloud provider are 404 for the master key as well: nothing is
    sent to api.openai.com and no 500 answers for a feature that is not there (requestmodel.MASTER_ROUTES)."""
    with client_for(served, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client:
        for method, path in [("GET", "/v1/files"), ("POST", "/v1/vector_stores"), ("GET", "/key/list"),
                             ("GET", "/spend/logs"), ("POST", "/openai/v1/files"), ("POST", "/model/new")]:
            answer = client.request(method, path, json={})
            assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
            assert "is not served by this stack" in answer.json()["error"]["message"]
        info = client.get("/model/info")
        assert info.status_code == 200, info.text[:200]
        assert {m["model_name"] for m in info.json()["data"]} == {A, B}
        chat = client.post("/v1/chat/completions", json={"model": B, **CHAT})
        assert chat.status_code == 200, chat.text[:200]


# The fuzz: schemathesis's own CLI, bounded by count (MAX_EXAMPLES per operation, fixed seed, no coverage
# phase, whose case count does not follow --max-examples) and by time (FUZZ_TIMEOUT_S for the whole run).
MAX_EXAMPLES, FUZZ_SEED, FUZZ_TIMEOUT_S = 5, 15, 600  # 50-90 s here; the bound allows a loaded machine
# The master key's health checks: 503 is their verdict "no healthy deployment" (e.g. /health?model=<unknown>).
HEALTH_VERDICTS: Final = frozenset({"/health", "/health/readiness"})


@dataclass
class FuzzFigures:
    cases: int
    statuses: Counter[int]
    problems: list[str]

    def merge(self, other: FuzzFigures) -> None:
        self.cases += other.cases
        self.statuses.update(other.statuses)
        self.problems.extend(other.problems)


def fuzz_figures(ndjson: Path, secrets: tuple[str, ...], *, master: bool) -> FuzzFigures:
    """Every interaction the run recorded: statuses, and what must never be in an answer (for a user key, a
    2xx outside the routes open to API keys)."""
    figures = FuzzFigures(0, Counter(), [])
    with ndjson.open(encoding="utf-8") as events:
        for line in events:
            finished = json.loads(line).get("ScenarioFinished")
            if finished is None:
                continue
            label = finished["recorder"]["label"]  # "METHOD /template"
            for interaction in (finished["recorder"].get("interactions") or {}).values():
                figures.cases += 1
                response, request = interaction.get("response"), interaction["request"]
                where = f"{request['method']} {request['uri'][:160]} ({label})"
                if response is None:
                    figures.problems.append(f"{where}: no answer")
                    continue
                status = response["status_code"]
                figures.statuses[status] += 1
                content = base64.b64decode((response.get("content") or {}).get("$base64", ""))
                template = label.split(" ", 1)[1]
                if status >= 500 and not (status == 503 and template in HEALTH_VERDICTS):
                    figures.problems.append(f"{where}: {status} {content[:120]!r}")
                elif not master and 200 <= status < 300 and template not in OPEN_TO_KEYS and not public(template):
                    figures.problems.append(f"{where}: {status} on a route API keys may not call")
                if b"Traceback" in content or any(s.encode() in content for s in secrets):
                    figures.problems.append(f"{where}: a traceback or a secret in the answer")
    return figures


def fuzz(served: Served, spec: dict[str, Any], key: str,
         folder: Path) -> tuple[FuzzFigures, dict[str, Any], list[str], str]:
    """schemathesis's CLI against the gateway's OpenAPI with `key`: (figures, its JSON report of the whole
    run, the operations its own checks failed or errored on, its output).
    The description is the one the `openapi` fixture read (LiteLLM builds it in more than schemathesis's 10 s
    on a busy machine), from a file, with the gateway as the base URL.

    An operation whose CASES schemathesis failed to generate (its ERRORS section: an exception inside
    schemathesis or Hypothesis, no request sent) is fuzzed again alone with one worker: Hypothesis's caches
    are not thread-safe (schemathesis/schemathesis#860; seen here as a FlakyFailure in
    hypothesis/internal/lambda_sources.py for PUT /guardrails/{guardrail_id} under --workers 4). The
    figures count both runs; what the second run says of those operations replaces what the first said."""
    schema = folder / "openapi.json"
    schema.write_text(json.dumps(spec), encoding="utf-8")
    figures, report, returncode, output = run_schemathesis(served, schema, key, folder / "report", ())
    failed = labels(output)
    assert returncode == 0 or failed, f"schemathesis failed and named no operation:\n{output[-3000:]}"
    broken = generation_errors(output)
    if broken:
        again, _, again_code, again_output = run_schemathesis(served, schema, key, folder / "report-again", broken)
        assert not generation_errors(again_output), f"schemathesis failed again:\n{failures(again_output)}"
        assert again_code == 0 or labels(again_output), f"schemathesis failed:\n{again_output[-3000:]}"
        figures.merge(again)
        failed = [label for label in failed if label not in broken] + labels(again_output)
        output = output + "\n" + again_output
    return figures, report, failed, output


def run_schemathesis(served: Served, schema: Path, key: str, reports: Path,
                     only: tuple[str, ...]) -> tuple[FuzzFigures, dict[str, Any], int, str]:
    st = Path(sys.executable).parent / "st"
    argv = [str(st), "run", str(schema), "--url", served.gateway.url, "--header", f"Authorization: Bearer {key}",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(FUZZ_SEED), "--phases", "examples,fuzzing",
            "--checks", "not_a_server_error", "--workers", "1" if only else "4", "--request-timeout", "30",
            "--no-shrink", "--generation-database", "none", "--report", "ndjson,json", "--report-dir", str(reports),
            "--no-color", *(arg for label in only for arg in ("--include-name", label))]
    done = subprocess.run(argv, cwd=schema.parent, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S,
                          check=False)
    assert done.returncode in {0, 1}, f"schemathesis could not run ({done.returncode}):\n{done.stdout[-3000:]}"
    report = json.loads(next(reports.glob("json-*.json")).read_text(encoding="utf-8"))
    figures = fuzz_figures(next(reports.glob("ndjson-*.ndjson")), (MASTER_KEY, VLLM_KEY), master=key == MASTER_KEY)
    return figures, report, done.returncode, done.stdout


def labels(text: str) -> list[str]:
    """The operations ("METHOD /template") named by the section headers of schemathesis's output."""
    return re.findall(r"^_+ ([A-Z]+ \S+) _+$", text, re.MULTILINE)


def generation_errors(output: str) -> tuple[str, ...]:
    """The operations in schemathesis's ERRORS section (cases it could not generate or run)."""
    section = re.search(r"^=+ ERRORS =+$(.*?)(?=^=+ [A-Z]+ =+$|\Z)", output, re.MULTILINE | re.DOTALL)
    return tuple(labels(section.group(1))) if section else ()


def failures(output: str) -> str:
    """schemathesis's own account of what failed (its FAILURES/ERRORS sections), or the end of its output."""
    start = min((i for i in (output.find("FAILURES"), output.find("ERRORS")) if i >= 0), default=-1)
    return output[start:start + 6000] if start >= 0 else output[-3000:]


def describe(figures: FuzzFigures, report: dict[str, Any]) -> str:
    return (f"schemathesis {report['schemathesis_version']}: {report['operations']['tested']} operations, "
            f"{report['test_cases']['generated']} cases generated, {figures.cases} answers in "
            f"{report['running_time']:.0f} s; statuses {dict(sorted(figures.statuses.items()))}; "
            f"{len(figures.problems)} wrong")


def test_fuzz_the_gateway_openapi_with_a_user_key(served: Served, openapi: dict[str, Any], tmp_path: Path,
                                                  record_property: Callable[[str, object], None]) -> None:
    before = served.requests_to_b()
    figures, report, failed, output = fuzz(served, openapi, served.key, tmp_path)
    record_property("figures", describe(figures, report))
    assert report["operations"]["tested"] > 0
    assert served.requests_to_b() == before, f"model {B} was reached"
    assert not figures.problems, f"{len(figures.problems)} answers are wrong:\n" + "\n".join(figures.problems)
    assert not failed, failures(output)


def test_fuzz_the_gateway_openapi_with_the_master_key(served: Served, openapi: dict[str, Any], tmp_path: Path,
                                                      record_property: Callable[[str, object], None]) -> None:
    """Last in the module: the master key may change the gateway's state (models added in memory, ...)."""
    figures, report, failed, output = fuzz(served, openapi, MASTER_KEY, tmp_path)
    record_property("figures", describe(figures, report))
    assert report["operations"]["tested"] > 0
    assert not figures.problems, f"{len(figures.problems)} answers are wrong:\n" + "\n".join(figures.problems)
    # schemathesis's own server-error check fails the health verdicts too: only those may be in its report.
    assert all(label.split(" ", 1)[1] in HEALTH_VERDICTS for label in failed), failures(output)
