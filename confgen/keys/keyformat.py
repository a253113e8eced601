"""API keys: `sk-<prefix>_<secret>`, shown once, stored only as a hash, found by the non-secret prefix.

The prefix (12 base32 characters, 60 random bits) names the key in logs, the ledger and the CLI; the
secret is 32 random bytes (256 bits). The stored hash is SHA-256 of the whole key: a slow password hash
(bcrypt, argon2) protects guessable passwords, but nobody can guess 256 random bits, so a fast hash
loses nothing and keeps an uncached check at microseconds. Hashes are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX_LEN = 12
SECRET_BYTES = 32
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
KEY_PATTERN = re.compile(rf"^sk-([a-z2-7]{{{PREFIX_LEN}}})_([A-Za-z0-9_-]{{43}})$")
PREFIX_PATTERN = re.compile(rf"^[a-z2-7]{{{PREFIX_LEN}}}$")
KEY_SHAPE = "sk-<12 characters a-z, 2-7>_<43 characters>"


class MalformedKey(ValueError):
    """Not a key of ours (the message never contains the key)."""


def generate() -> tuple[str, str]:
    """A new key and its prefix."""
    prefix = "".join(secrets.choice(_BASE32) for _ in range(PREFIX_LEN))
    return f"sk-{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}", prefix


def parse_prefix(key: str) -> str:
    """The prefix of a well-formed key; MalformedKey otherwise."""
    match = KEY_PATTERN.fullmatch(key)
    if match is None:
        raise MalformedKey(f"malformed API key: expected {KEY_SHAPE}")
    return match.group(1)


def is_prefix(text: str) -> bool:
    return PREFIX_PATTERN.fullmatch(text) is not None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key).encode(), stored_hash.encode())
