"""One API key as stored (never the key itself): identity, lifetime, allowed models and limits."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
# A key's priority: lower is served first, as vLLM's request `priority` (vllm/entrypoints/openai/chat_completion/
# protocol.py: "lower means earlier handling; default: 0"); the bound keeps it a small number.
PRIORITY_RANGE = (-1000, 1000)


@dataclass(frozen=True)
class Limits:
    """Per-key limits; None = unlimited. Budget: tokens (prompt + completion) per period."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_tokens: int | None = None
    budget_period_s: int | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_parallel, self.budget_tokens))


@dataclass(frozen=True)
class KeyRecord:
    prefix: str
    key_hash: str
    alias: str
    created_at: datetime
    owner: str | None = None
    models: tuple[str, ...] | None = None  # None: every model
    limits: Limits = field(default_factory=Limits)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    priority: int | None = None  # None: 0, vLLM's default

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def period_window(self, now: datetime) -> tuple[int, datetime]:
        """The budget period `now` falls in: (index, end). Periods are counted from the key's creation."""
        period = timedelta(seconds=self.limits.budget_period_s or 1)
        index = int((now - self.created_at) / period)
        return index, self.created_at + period * (index + 1)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("created_at", "expires_at", "revoked_at"):
            value = getattr(self, name)
            data[name] = value.isoformat() if value is not None else None
        data["models"] = list(self.models) if self.models is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRecord:
        def when(value: Any) -> datetime | None:
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        created = when(data["created_at"])
        if created is None:
            raise ValueError("created_at is missing")
        models = data.get("models")
        return cls(prefix=str(data["prefix"]), key_hash=str(data["key_hash"]), alias=str(data["alias"]),
                   created_at=created, owner=data.get("owner"),
                   models=tuple(models) if models is not None else None, limits=Limits(**data.get("limits", {})),
                   expires_at=when(data.get("expires_at")), revoked_at=when(data.get("revoked_at")),
                   priority=data.get("priority"))
