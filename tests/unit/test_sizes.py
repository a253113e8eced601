"""confgen.sizes: token counts written as sizes."""

from __future__ import annotations

import re

import pytest

from confgen.sizes import parse_size


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("128K", 131072),
        ("128k", 131072),
        ("32k", 32768),
        ("1M", 1048576),
        ("1m", 1048576),
        (" 64 K ", 65536),
        ("4096", 4096),
        (4096, 4096),
        (0, 0),
        ("0", 0),
    ],
)
def test_sizes_are_understood(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "expected an integer or a size like 128K, got 'lots'"),
        ("-1", "expected an integer or a size like 128K, got '-1'"),
        ("1.5K", "expected an integer or a size like 128K, got '1.5K'"),
        ("12G", "expected an integer or a size like 128K, got '12G'"),
        ("", "expected an integer or a size like 128K, got ''"),
        (True, "expected an integer or a size like 128K, got True"),
        (False, "expected an integer or a size like 128K, got False"),
        (1.5, "expected an integer or a size like 128K, got 1.5"),
        (None, "expected an integer or a size like 128K, got None"),
        ([128], "expected an integer or a size like 128K, got [128]"),
        # A negative integer gets its own wording; the Size type then also requires >= 1.
        (-1, "expected a positive number, got -1"),
    ],
)
def test_bad_sizes_say_what_is_accepted(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_size(value)
