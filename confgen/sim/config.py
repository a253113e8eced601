"""The simulator's settings: fixed ones from flags (`SimConfig`) and faults that change at run time."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SimConfig:
    served_model_names: tuple[str, ...] = ("sim",)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_num_seqs: int = 256
    max_model_len: int = 32768
    ttft_ms: float = 20.0
    per_prompt_token_ms: float = 0.0
    itl_ms: float = 10.0
    jitter: float = 0.0
    output_tokens: int = 32
    seed: int | None = None
    # vLLM's sleep API (--enable-sleep-mode with VLLM_SERVER_DEV_MODE=1): POST /sleep?level=N, /wake_up.
    sleep_mode: bool = False
    sleep_s: float = 0.0  # how long /sleep takes
    wake_s: float = 0.0  # how long /wake_up takes

    @property
    def model_name(self) -> str:
        """The name metrics are labelled with (vLLM uses the first served name)."""
        return self.served_model_names[0]


class FaultError(ValueError):
    """A fault setting that is out of range or of the wrong type (HTTP 400 / a CLI error)."""


@dataclass
class Faults:
    """What goes wrong, changeable while the simulator runs (`POST /sim/faults`)."""

    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    slow_start_s: float = 0.0
    drop_after_chunks: int | None = None
    wake_kills: bool = False  # POST /wake_up kills the server (the engine death of vllm#50011)
    # Monotonic time until which the server acts as if it were still starting.
    starting_until: float = field(default=0.0, repr=False)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply the given keys (validated all first, so a bad one changes nothing).

        `slow_start_s` counts from now: the server refuses requests for that long from this call on.
        """
        unknown = sorted(set(changes) - set(public_fault_names()))
        if unknown:
            raise FaultError(f"unknown fault {', '.join(unknown)}; known: {', '.join(public_fault_names())}")
        checked = {name: _check(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)
        if "slow_start_s" in checked:
            self.starting_until = time.monotonic() + self.slow_start_s

    def starting(self) -> bool:
        return time.monotonic() < self.starting_until

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        del values["starting_until"]
        values["starting"] = self.starting()
        return values


def public_fault_names() -> tuple[str, ...]:
    return ("error_rate", "error_status", "hang", "slow_start_s", "drop_after_chunks", "wake_kills")


def _check(name: str, value: Any) -> Any:
    if name in {"hang", "wake_kills"}:
        if not isinstance(value, bool):
            raise FaultError(f"{name}: expected true or false, got {value!r}")
        return value
    if name == "drop_after_chunks":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FaultError(f"drop_after_chunks: expected null or an integer >= 0, got {value!r}")
        return value
    if name == "error_status":
        if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
            raise FaultError(f"error_status: expected an HTTP error status 400-599, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{name}: expected a number >= 0, got {value!r}")
    if name == "error_rate" and value > 1:
        raise FaultError(f"error_rate: expected a fraction 0-1, got {value!r}")
    return float(value)
