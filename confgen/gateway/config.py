"""What the gateway-side code reads from its environment (set by the launcher, `confgen up`).

The database URL travels as CONFGEN_DATABASE_URL, never as DATABASE_URL: with that name set and Prisma
missing, the LiteLLM proxy exits at start-up (FINDINGS).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confgen.keys.db import DEFAULT_DATABASE_URL

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV = {
    "database_url": "CONFGEN_DATABASE_URL",
    "redis_url": "CONFGEN_REDIS_URL",
    "redis_prefix": "CONFGEN_REDIS_PREFIX",
    "spool_dir": "CONFGEN_LEDGER_SPOOL",
    "snapshot": "CONFGEN_KEYS_SNAPSHOT",
    "key_ttl_s": "CONFGEN_KEY_CACHE_TTL",
    "slot_ttl_s": "CONFGEN_SLOT_TTL",
}


def _fallback_spool() -> Path:
    """Without CONFGEN_LEDGER_SPOOL: a private folder in the temp dir (start-up warns; may not survive a reboot)."""
    return Path(tempfile.gettempdir()) / f"confgen-spool-{os.getuid()}"


@dataclass(frozen=True)
class GatewayConfig:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = DEFAULT_REDIS_URL  # None: no shared counters (per-instance limits)
    redis_prefix: str = "confgen:"
    spool_dir: Path = Path("confgen-spool")  # the launcher sets CONFGEN_LEDGER_SPOOL
    snapshot: Path | None = None
    key_ttl_s: float = 5.0
    slot_ttl_s: float = 630.0  # a parallel slot whose end never comes frees itself after this
    master_key: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayConfig:
        redis_url = env.get(ENV["redis_url"], DEFAULT_REDIS_URL)
        snapshot = env.get(ENV["snapshot"])
        return cls(database_url=env.get(ENV["database_url"]) or DEFAULT_DATABASE_URL,
                   redis_url=None if redis_url.lower() in {"", "none", "off"} else redis_url,
                   redis_prefix=env.get(ENV["redis_prefix"], "confgen:"),
                   spool_dir=Path(env.get(ENV["spool_dir"]) or _fallback_spool()).resolve(),
                   snapshot=Path(snapshot) if snapshot else None,
                   key_ttl_s=float(env.get(ENV["key_ttl_s"]) or 5.0),
                   slot_ttl_s=float(env.get(ENV["slot_ttl_s"]) or 630.0),
                   master_key=env.get("LITELLM_MASTER_KEY", ""))
