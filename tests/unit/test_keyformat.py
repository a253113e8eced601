"""confgen.keys.keyformat and confgen.keys.record: key shape, hashing, lifetime, budget periods."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confgen.keys import keyformat
from confgen.keys.record import KeyRecord, Limits

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_generated_key_parses_to_its_prefix_and_matches_its_hash() -> None:
    key, prefix = keyformat.generate()
    assert key.startswith(f"sk-{prefix}_")
    assert len(key) == 3 + 12 + 1 + 43
    assert keyformat.parse_prefix(key) == prefix
    assert keyformat.is_prefix(prefix)
    assert keyformat.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert keyformat.matches(key, keyformat.hash_key(key))
    assert not keyformat.matches(key[:-1] + ("A" if key[-1] != "A" else "B"), keyformat.hash_key(key))


def test_keys_are_distinct() -> None:
    keys = {keyformat.generate()[0] for _ in range(200)}
    assert len(keys) == 200


@pytest.mark.parametrize("bad", [
    "", "sk-", "sk-1234", "sk-abcdefghijkl", "sk-abcdefghijkl_", "sk-ABCDEFGHIJKL_" + "a" * 43,
    "sk-abcdefghijk1_" + "a" * 43,  # 1 is not base32
    "sk-abcdefghijkl_" + "a" * 42, "sk-abcdefghijkl_" + "a" * 44, "sk-abcdefghijkl_" + "a" * 42 + "!",
    "pk-abcdefghijkl_" + "a" * 43, " sk-abcdefghijkl_" + "a" * 43, "sk-abcdefghijkl_" + "a" * 43 + "\n",
    "sk-abcdefghijkl_' OR 1=1 --" + "a" * 16,
])
def test_malformed_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(keyformat.MalformedKey) as info:
        keyformat.parse_prefix(bad)
    assert str(info.value) == f"malformed API key: expected {keyformat.KEY_SHAPE}"


@given(st.text(max_size=80))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        prefix = keyformat.parse_prefix(text)
    except keyformat.MalformedKey:
        return
    assert keyformat.is_prefix(prefix)


def record(**changes: object) -> KeyRecord:
    base = KeyRecord(prefix="abcdefghijkl", key_hash="0" * 64, alias="a", created_at=T0)
    return KeyRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_status_revoked_wins_over_expired() -> None:
    assert record().status(T0) == "active"
    assert record(expires_at=T0 + timedelta(days=1)).status(T0) == "active"
    assert record(expires_at=T0).status(T0) == "expired"
    assert record(expires_at=T0, revoked_at=T0).status(T0) == "revoked"


def test_allowed_models() -> None:
    assert record().allows("any")
    assert record(models=("a", "b")).allows("b")
    assert not record(models=("a", "b")).allows("c")


def test_budget_periods_count_from_creation() -> None:
    r = record(limits=Limits(budget_tokens=10, budget_period_s=86400))
    assert r.period_window(T0) == (0, T0 + timedelta(days=1))
    assert r.period_window(T0 + timedelta(hours=23, minutes=59)) == (0, T0 + timedelta(days=1))
    assert r.period_window(T0 + timedelta(days=1)) == (1, T0 + timedelta(days=2))
    assert r.period_window(T0 + timedelta(days=30, hours=5)) == (30, T0 + timedelta(days=31))


def test_record_json_round_trip() -> None:
    r = record(models=("m1",), owner="o", limits=Limits(rpm=1, tpm=2, max_parallel=3, budget_tokens=4,
                                                          budget_period_s=5),
               expires_at=T0 + timedelta(days=1), revoked_at=T0)
    assert KeyRecord.from_json(r.to_json()) == r
    assert "key" not in r.to_json()
