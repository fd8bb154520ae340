"""API keys: how they are made, parsed and checked, and what a key's limits resolve to. No I/O.

A key is shown to its owner once and looks like::

    sk-strata-3f9a1c2b7d4e-Qk3x…(43 chars)
    └─prefix─┘└─key id───┘ └─secret: 32 random bytes, URL-safe base64─┘

The key id is public (it names the key in listings, logs and usage rows) and is the
database lookup key; only the SHA-256 of the secret is stored. A fast unsalted hash is
enough because the secret is 256 random bits, not a password: there is nothing to guess.
The stored hash is compared with `hmac.compare_digest`, and an unknown id is compared
against a dummy hash, so the time taken does not tell a wrong secret from an unknown id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final, NewType

from strata_gateway.domain.ports import Limits

__all__ = [
    "KEY_PREFIX",
    "KeyId",
    "NewKey",
    "ParsedKey",
    "bearer_token",
    "display_prefix",
    "hash_secret",
    "merge_limits",
    "new_key",
    "parse_key",
    "secret_matches",
    "valid_key_id",
]

KeyId = NewType("KeyId", str)

KEY_PREFIX: Final = "sk-strata-"
_ID = re.compile(r"^[a-z0-9]{8,32}$")
_SECRET = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")
_DUMMY_HASH: Final = hashlib.sha256(b"strata: no such key").digest()


@dataclass(frozen=True)
class ParsedKey:
    """The two parts of a presented key."""

    key_id: KeyId
    secret: str


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the full text (shown once) and what is stored."""

    key_id: KeyId
    key: str
    prefix: str
    secret_sha256: bytes


def new_key() -> NewKey:
    """Generate a key: a 12-hex-digit id and a 256-bit secret."""
    key_id = KeyId(secrets.token_hex(6))
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}-{secret}", display_prefix(key_id, secret), hash_secret(secret))


def display_prefix(key_id: str, secret: str) -> str:
    """What listings show of a key: the id and the first four characters of the secret."""
    return f"{KEY_PREFIX}{key_id}-{secret[:4]}"


def valid_key_id(key_id: str) -> bool:
    """Whether `key_id` has the shape of a key id (8-32 lowercase letters and digits)."""
    return _ID.fullmatch(key_id) is not None


def parse_key(text: str) -> ParsedKey | None:
    """Split `sk-strata-<id>-<secret>`; None when `text` does not have that shape."""
    if not text.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = text[len(KEY_PREFIX) :].partition("-")
    if not sep or not valid_key_id(key_id) or _SECRET.fullmatch(secret) is None:
        return None
    return ParsedKey(KeyId(key_id), secret)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a key's secret: the only form in which it is stored."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored: bytes | None) -> bool:
    """Constant-time check of `secret` against the stored hash (None = unknown key; always False)."""
    expected = _DUMMY_HASH if stored is None else stored
    return hmac.compare_digest(hash_secret(secret), expected) and stored is not None


def merge_limits(key: Limits, tenant: Limits) -> Limits:
    """A key's effective limits: each of its overrides where set, else the tenant's value."""
    return Limits(
        rpm=key.rpm if key.rpm is not None else tenant.rpm,
        tpm=key.tpm if key.tpm is not None else tenant.tpm,
        max_concurrency=key.max_concurrency if key.max_concurrency is not None else tenant.max_concurrency,
    )
