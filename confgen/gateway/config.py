"""What the gateway-side code reads from its environment (set by the launcher, `confgen up`).

The database URL travels as CONFGEN_DATABASE_URL, never as DATABASE_URL: with that name set and Prisma
missing, the LiteLLM proxy exits at start-up (README.md, "Keys and usage").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confgen.durations import parse_duration
from confgen.errors import ConfgenError, Problem
from confgen.keys.db import DEFAULT_DATABASE_URL
from confgen.schema import redis_off

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV = {
    "database_url": "CONFGEN_DATABASE_URL",
    "redis_url": "CONFGEN_REDIS_URL",
    "redis_prefix": "CONFGEN_REDIS_PREFIX",
    "spool_dir": "CONFGEN_LEDGER_SPOOL",
    "snapshot": "CONFGEN_KEYS_SNAPSHOT",
    "key_ttl_s": "CONFGEN_KEY_CACHE_TTL",
    "key_stale_max_s": "CONFGEN_KEY_STALE_MAX",
    "slot_ttl_s": "CONFGEN_SLOT_TTL",
    "max_body_mb": "CONFGEN_MAX_BODY_MB",
    "max_header_kb": "CONFGEN_MAX_HEADER_KB",
    "body_timeout_s": "CONFGEN_BODY_TIMEOUT",
    "relay_lane": "CONFGEN_RELAY_LANE",
}
LANE_VALUES = {"on": True, "off": False}
# The launcher's run folder (confgen/runtime/rundir.py, RunDir.for_root) and LiteLLM's worker count, which
# its CLI exports for the workers (litellm/proxy/proxy_cli.py: os.environ["NUM_WORKERS"]).
RUN_DIR_ENV = "CONFGEN_RUN_DIR"
WORKERS_ENV = "NUM_WORKERS"


@dataclass(frozen=True)
class EdgeLimits:
    """Request limits at the gateway's edge (confgen/gateway/edge.py answers 413, 431 and 408 above them)."""

    max_body_bytes: int = 32 * 1024 * 1024  # as nginx's client_max_body_size (confgen/render/nginx.py)
    max_header_bytes: int = 32 * 1024  # request line + headers; nginx's default is 4 buffers of 8 KiB
    body_timeout_s: float = 30.0  # the longest silence while a body arrives (nginx client_body_timeout: 60 s)

    def describe(self) -> str:
        return (f"bodies up to {self.max_body_bytes / 2**20:g} MiB, headers up to {self.max_header_bytes / 1024:g} "
                f"KiB, a body may stall {self.body_timeout_s:g} s")


def fallback_spool(env: Mapping[str, str]) -> Path:
    """Without CONFGEN_LEDGER_SPOOL: <run folder>/spool as the launcher sets it, else the XDG state folder
    (never a name others can guess and create first in a shared folder such as /tmp)."""
    if env.get(RUN_DIR_ENV):
        return Path(env[RUN_DIR_ENV]) / "spool"
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "confgen" / "spool"
    try:
        home = Path(env.get("HOME") or Path.home())
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (a container's arbitrary uid)
        raise ConfgenError.one(ENV["spool_dir"], "not set, and this user has no home folder for the spool",
                               "set it to a folder only the gateway's user can write") from None
    return home / ".local" / "state" / "confgen" / "spool"


def _seconds(env: Mapping[str, str], key: str, default: float, problems: list[Problem],
             *, zero_ok: bool = False) -> float:
    """A number of seconds (`900`, `2.5`) or a duration (`15m`); a bad value is a problem naming the variable."""
    name = ENV[key]
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        try:
            value = float(parse_duration(raw))
        except ValueError:
            value = math.nan
    if math.isfinite(value) and (value > 0 or (zero_ok and value == 0)):
        return value
    least = "0 or more" if zero_ok else "more than 0"
    problems.append(Problem(name, f"expected a number of seconds ({least}) or a duration like 15m, got {raw!r}",
                            f"fix it, or unset it for the default {default:g}"))
    return default


def _number(env: Mapping[str, str], key: str, default: float, unit: str, problems: list[Problem]) -> float:
    name = ENV[key]
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    problems.append(Problem(name, f"expected a number of {unit} (more than 0), got {raw!r}",
                            f"fix it, or unset it for the default {default:g}"))
    return default


def _edge(env: Mapping[str, str], problems: list[Problem]) -> EdgeLimits:
    default = EdgeLimits()
    body_mb = _number(env, "max_body_mb", default.max_body_bytes / 2**20, "MiB", problems)
    header_kb = _number(env, "max_header_kb", default.max_header_bytes / 1024, "KiB", problems)
    return EdgeLimits(max_body_bytes=int(body_mb * 2**20), max_header_bytes=int(header_kb * 1024),
                      body_timeout_s=_seconds(env, "body_timeout_s", default.body_timeout_s, problems))


def _lane(env: Mapping[str, str], problems: list[Problem]) -> bool:
    name = ENV["relay_lane"]
    raw = env.get(name, "").strip().lower() or "on"
    if raw in LANE_VALUES:
        return LANE_VALUES[raw]
    problems.append(Problem(name, f"expected on or off, got {raw!r}",
                            "set RELAY_LANE=on (the relay lane for vLLM-native requests) or off in vars.env"))
    return True


def _workers(env: Mapping[str, str], problems: list[Problem]) -> int:
    raw = env.get(WORKERS_ENV, "").strip() or "1"
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    problems.append(Problem(WORKERS_ENV, f"expected a worker count (1 or more), got {raw!r}",
                            "pass --num_workers N to litellm"))
    return 1


@dataclass(frozen=True)
class GatewayConfig:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = DEFAULT_REDIS_URL  # None: no shared counters (per-instance limits)
    redis_prefix: str = "confgen:"
    spool_dir: Path = Path("confgen-spool")  # the launcher sets CONFGEN_LEDGER_SPOOL
    snapshot: Path | None = None
    key_ttl_s: float = 5.0
    # While PostgreSQL is down a cached key is served this long after the database last confirmed it.
    key_stale_max_s: float = 900.0
    slot_ttl_s: float = 630.0  # a parallel slot whose end never comes frees itself after this
    master_key: str = ""
    workers: int = 1  # uvicorn worker processes of this gateway (each one counts limits on its own without Redis)
    edge: EdgeLimits = field(default_factory=EdgeLimits)  # body and header sizes, body stalls (confgen/gateway/edge.py)
    relay_lane: bool = True  # vLLM-native requests relayed as bytes (confgen/gateway/lane.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayConfig:
        """The settings, or one ConfgenError naming every variable with a bad value."""
        problems: list[Problem] = []
        redis_url = env.get(ENV["redis_url"], DEFAULT_REDIS_URL)
        snapshot = env.get(ENV["snapshot"])
        config = cls(database_url=env.get(ENV["database_url"]) or DEFAULT_DATABASE_URL,
                     redis_url=None if redis_off(redis_url) else redis_url,
                     redis_prefix=env.get(ENV["redis_prefix"], "confgen:"),
                     spool_dir=Path(env.get(ENV["spool_dir"]) or fallback_spool(env)).resolve(),
                     snapshot=Path(snapshot) if snapshot else None,
                     key_ttl_s=_seconds(env, "key_ttl_s", 5.0, problems),
                     key_stale_max_s=_seconds(env, "key_stale_max_s", 900.0, problems, zero_ok=True),
                     slot_ttl_s=_seconds(env, "slot_ttl_s", 630.0, problems),
                     master_key=env.get("LITELLM_MASTER_KEY", ""),
                     workers=_workers(env, problems),
                     edge=_edge(env, problems),
                     relay_lane=_lane(env, problems))
        if config.workers > 1 and config.redis_url is None:
            problems.append(Problem(
                f"{WORKERS_ENV}={config.workers} with {ENV['redis_url']}={redis_url or '(empty)'}",
                f"each of the {config.workers} workers would count rate limits, parallel slots and budgets on its "
                f"own, so every key would get {config.workers} times its limits",
                f"point {ENV['redis_url']} at a Redis (vars.env: REDIS_URL), or run one worker "
                "(vars.env: LITELLM_NUM_WORKERS=1, litellm --num_workers 1)"))
        if problems:
            raise ConfgenError(problems)
        return config
