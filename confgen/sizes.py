"""Token counts written as sizes: 128K = 131072, 32k = 32768, 1M = 1048576."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")
_FACTOR = {"": 1, "k": 1024, "m": 1024 * 1024}


def parse_size(value: object) -> int:
    """Return the integer a size stands for; raise ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer or a size like 128K, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a positive number, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _FACTOR[match.group(2).lower()]
    raise ValueError(f"expected an integer or a size like 128K, got {value!r}")
