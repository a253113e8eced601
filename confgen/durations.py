"""Durations written as a number and a unit (`90d`, `12h`, `30m`, `45s`, `2w`): key expiry, budget periods,
`confgen usage --since`."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$")


def parse_duration(text: str) -> int:
    """`30d` -> 2592000 seconds. Raises ValueError with a message a user can act on."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration like 30d, 12h, 15m, 45s or 2w, got {text!r}")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return seconds


def format_duration(seconds: int) -> str:
    """The largest whole unit: 2592000 -> `30d`, 90 -> `90s`."""
    for unit in ("d", "h", "m"):  # days rather than weeks: people write 30d and 7d
        size = UNITS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
