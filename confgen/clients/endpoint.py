"""What every client configuration is made of: the gateway's URL, where the key is, and the models with their
context length and a max output that fits it (both from the catalog)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from confgen.catalog import Selection, select
from confgen.errors import ConfgenError
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.runtime import docker
from confgen.runtime.rundir import RunDir

KEY_ENV = "CONFGEN_API_KEY"  # the variable clients read the key from (Codex env_key, Continue secrets)
MASTER_KEY_FILE = "LITELLM_MASTER_KEY"
_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # noqa: S104 - compared, not bound


@dataclass(frozen=True)
class ClientModel:
    """One model as a client sees it: the name it sends, its context and how much it may ask for."""

    name: str
    description: str
    context: int | None  # vLLM's --max-model-len (None: not set in the model file)
    max_output: int  # the catalog's litellm.max_tokens, which is below the context (checked at merge)
    timeout_s: float

    @property
    def max_input(self) -> int | None:
        """The prompt a request may carry when it asks for max_output tokens."""
        return self.context - self.max_output if self.context else None

    @classmethod
    def of(cls, model: ResolvedModel) -> ClientModel:
        return cls(name=model.served_name, description=model.info.description, context=model.max_model_len,
                   max_output=model.sampling.max_tokens, timeout_s=model.limits.timeout)


@dataclass(frozen=True)
class KeyRef:
    """Where the key is; configurations name the file or the variable, never the value (unless asked)."""

    path: Path
    label: str  # what it is, for people: "key 'ann-agents' (prefix ...)" or "the master key"
    env: str = KEY_ENV
    value: str | None = None  # only with --show-key

    @property
    def shell(self) -> str:
        """The key in a shell command: its value when asked for, else read from the file."""
        return _sh(self.value) if self.value is not None else f'"$(cat {_sh(str(self.path))})"'


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http(s)://host:port, no /v1: ANTHROPIC_BASE_URL must not have it
    key: KeyRef
    models: tuple[ClientModel, ...]
    ca_file: Path | None = None  # the CA of our HTTPS front (scripts/certs.sh), for https base URLs

    @property
    def openai_base(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def default(self) -> ClientModel:
        return self.models[0]


def normalise_base_url(url: str, where: str = "--base-url") -> str:
    """scheme://host[:port][/prefix] without a trailing slash or /v1 (clients add the API path themselves)."""
    text = url.strip().rstrip("/")
    text = text.removesuffix("/v1").rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfgenError.one(where, f"{url!r} is not an http(s) URL", "e.g. http://127.0.0.1:4000", exit_code=2)
    if parts.query or parts.fragment:
        raise ConfgenError.one(where, f"{url!r} has a query or fragment", "give only scheme://host:port[/path]",
                               exit_code=2)
    return text


def default_base_url(selection: Selection) -> str:
    """The local gateway from vars.env: LITELLM_HOST (a wildcard bind is reached on loopback) and LITELLM_PORT."""
    settings = selection.gvars.settings
    host = "127.0.0.1" if settings.LITELLM_HOST in _ANY_ADDRESS else settings.LITELLM_HOST
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.LITELLM_PORT}"


def running_models(project: Project, environ: Mapping[str, str]) -> list[str]:
    """The models of the stack started from this project (./runMe.sh or the Docker deployment), if any."""
    run = RunDir.for_root(project.root, dict(environ))
    deployed = docker.read_state(run)
    if deployed is not None:
        return list(deployed.models)
    state = run.read()
    return [state.model] if state is not None else []


def select_models(project: Project, names: Sequence[str], environ: Mapping[str, str]) -> Selection:
    """The named models, or those of the running stack; the first is the default model."""
    chosen = list(names) or running_models(project, environ)
    if not chosen:
        raise ConfgenError.one("--model", "no model named and no stack running from this project",
                               "name one with --model (`confgen list` shows the catalog)", exit_code=2)
    return select(project, chosen, dict(environ), source="--model")


def ca_file_for(project: Project, base_url: str, given: Path | None) -> Path | None:
    """https needs the CA of our front: --ca-file, else certs/ca.crt when scripts/certs.sh made it."""
    if not base_url.startswith("https://"):
        return given.resolve() if given else None
    path = given or project.root / "certs" / "ca.crt"
    if not path.is_file():
        raise ConfgenError.one("--ca-file", f"{path} does not exist: an https gateway needs the CA file clients "
                               "trust it by", "pass --ca-file (scripts/certs.sh certs makes certs/ca.crt)",
                               exit_code=2)
    return path.resolve()


def home(environ: Mapping[str, str]) -> Path:
    """The user's home: HOME (so tests and several users can point it elsewhere), else the system's."""
    return Path(environ.get("HOME") or os.path.expanduser("~"))


_sh = shlex.quote
