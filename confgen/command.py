"""The `command` section -> vLLM argv, and the dynamic arguments applied at launch.

Dynamic arguments (--host, --port, --served-model-name) replace any the file already has, never
duplicate them; --served-model-name gets the served name and, for a HuggingFace id, the id too. The
API key is never put in argv (it would show in `ps` and in logs): vLLM reads it from the
VLLM_API_KEY environment variable, which the launcher sets from secrets/.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from confgen.errors import ConfgenError

# Flags the launcher owns. Value: how many values the flag takes ("+" = one or more).
DYNAMIC_FLAGS = {"--host": "1", "--port": "1", "--served-model-name": "+", "--api-key": "+"}
_CONTINUATION = re.compile(r"\\\r?\n")


@dataclass(frozen=True)
class ServeCommand:
    """`vllm serve <model> <args...>` taken apart."""

    model: str
    args: tuple[str, ...]

    def flag_value(self, flag: str) -> str | None:
        """The last value given for `flag` (either --a-b or --a_b spelling, `--f v` or `--f=v`)."""
        value = None
        args = self.args
        for i, arg in enumerate(args):
            name, eq, inline = arg.partition("=")
            if normalise_flag(name) != flag:
                continue
            if eq:
                value = inline
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
            else:
                value = ""
        return value

    def has_flag(self, flag: str) -> bool:
        return any(normalise_flag(a.partition("=")[0]) == flag for a in self.args)


def normalise_flag(token: str) -> str:
    """vLLM accepts --max_model_len and --max-model-len alike."""
    if token.startswith("--"):
        return "--" + token[2:].replace("_", "-")
    return token


def parse_command(command: str, where: str) -> ServeCommand:
    try:
        # A continuation becomes a newline, not a space: a commented-out flag line that keeps its
        # trailing backslash must end its comment there, not swallow the flags on the next lines.
        argv = shlex.split(_CONTINUATION.sub("\n", command), comments=True)
    except ValueError as exc:
        raise ConfgenError.one(where, f"cannot split the command: {exc}", "check quotes and backslashes") from None
    if argv[:2] != ["vllm", "serve"]:
        shown = " ".join(argv[:2]) or "(empty)"
        raise ConfgenError.one(where, f"must start with 'vllm serve <model>', got {shown!r}",
                               "write: vllm serve <huggingface-id or path> [flags]")
    if len(argv) < 3 or argv[2].startswith("-"):
        raise ConfgenError.one(where, "'vllm serve' needs the model (a HuggingFace id or a path) first",
                               "write: vllm serve <huggingface-id or path> [flags]")
    return ServeCommand(model=argv[2], args=tuple(argv[3:]))


def strip_flags(args: tuple[str, ...], flags: dict[str, str]) -> tuple[list[str], list[str]]:
    """Remove `flags` (with their values) from args; return (kept, removed flag names)."""
    kept: list[str] = []
    removed: list[str] = []
    i = 0
    while i < len(args):
        name, eq, _ = args[i].partition("=")
        flag = normalise_flag(name)
        if flag not in flags:
            kept.append(args[i])
            i += 1
            continue
        removed.append(flag)
        i += 1
        if eq:
            continue
        if flags[flag] == "1":
            if i < len(args) and not _is_option(args[i]):
                i += 1
        else:
            while i < len(args) and not _is_option(args[i]):
                i += 1
    return kept, removed


def _is_option(token: str) -> bool:
    """Like argparse: `-tp` starts the next option (so `--served-model-name a -tp 2` keeps -tp 2)."""
    return token.startswith("-") and len(token) > 1 and not token[1].isdigit()


# A HuggingFace repo id ([namespace/]name); a local path (./x, /x, ~/x, a/b/c) is not one.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def is_hub_id(model: str) -> bool:
    """True for `org/name` or `name` as the hub spells them (no `..`, `--`, at most 96 characters)."""
    return (bool(_HUB_ID.match(model)) and len(model) <= 96 and ".." not in model and "--" not in model
            and not model.endswith((".", "-")))


def served_names(served_name: str, model: str) -> list[str]:
    """The names vLLM answers to: the served name first (vLLM reports it in every response and uses it
    when a request names no model), then the HuggingFace id, so a client of a per-model path may send
    either. A local path is not added: it names a folder on one machine, not a model clients know."""
    if model != served_name and is_hub_id(model):
        return [served_name, model]
    return [served_name]


def final_argv(cmd: ServeCommand, host: str, port: int, served_names: list[str]) -> list[str]:
    """The argv the launcher execs: the file's flags with the dynamic ones replaced."""
    kept, _ = strip_flags(cmd.args, DYNAMIC_FLAGS)
    return ["vllm", "serve", cmd.model, *kept, "--host", host, "--port", str(port),
            "--served-model-name", *served_names]
