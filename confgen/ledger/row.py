"""One ledger row: what a request used and how it ended. Never holds the key, only its prefix/alias."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UsageRow:
    request_id: str  # ours, made at auth: unique per request even when a client sends its own call id
    ts: datetime  # when the request started (UTC)
    status: int  # HTTP status the client got (200, 401, 429, 500 ...)
    call_id: str | None = None  # LiteLLM's litellm_call_id (the x-litellm-call-id response header)
    key_prefix: str | None = None
    key_alias: str | None = None  # "master" for the master key
    model: str | None = None  # the model name the client asked for
    deployment: str | None = None  # api_base LiteLLM sent it to
    route: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None  # streaming only
    error_class: str | None = None
    reason: str | None = None  # why it failed: ours (revoked, rpm, ...) or LiteLLM's normalized error
    stream: bool | None = None
    instance: str | None = None  # host:pid of the gateway process that wrote it
    model_wait_ms: float | None = None  # on-demand: how long it was held until its model was ready

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = self.ts.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRow:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["ts"] = datetime.fromisoformat(values["ts"])
        return cls(**values)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UsageRow))
SQL_TYPES = {
    "ts": "timestamptz", "status": "integer", "prompt_tokens": "integer", "completion_tokens": "integer",
    "latency_ms": "float8", "ttft_ms": "float8", "stream": "boolean",
    "model_wait_ms": "float8",
}
