"""confgen.durations: `30d`-style durations for --expires, --period and --since."""

from __future__ import annotations

import pytest

from confgen.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45), ("15m", 900), ("12h", 43200), ("1d", 86400), ("30d", 2592000), ("90d", 7776000),
    ("2w", 1209600), (" 7d ", 604800),
])
def test_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30", "30x", "-1d", "1.5d", "1 day", "0d", "30D", "1d2h"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(2592000, "30d"), (1209600, "14d"), (90, "90s"), (3600, "1h")])
def test_format(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
