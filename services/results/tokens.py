"""Result tokens: 192 random bits from `secrets`, URL-safe base64 (32 characters)."""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_BYTES = 24  # 192 bits: unguessable, and no collision in any realistic number of results
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_well_formed(token: str) -> bool:
    """Whether `token` could have been issued (URL-safe alphabet, sane length); says nothing of existence."""
    return bool(_TOKEN_RE.match(token))


def home_index(token: str, n_stores: int) -> int:
    """The result store a token lives in first: a stable hash, so a Get asks one store."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % n_stores
