"""The bearer token that protects POST /api/fingerprint.

config.json's `fingerprinting.token` wins. Without one, a random token is created once in the data
directory (file `fingerprint_token`, mode 0600) and reused: never a well-known default.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tunescout.common.config import Config

TOKEN_FILE = "fingerprint_token"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def resolve_token(config: Config, data_dir: Path, create: bool) -> tuple[str, bool]:
    """(token, created now). With `create` False a missing token file raises FileNotFoundError."""
    if config.fingerprint_token:
        return config.fingerprint_token, False
    path = token_path(data_dir)
    try:
        token = path.read_text(encoding="ascii").strip()
        if token:
            return token, False
    except FileNotFoundError:
        if not create:
            raise
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token, True
