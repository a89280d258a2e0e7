"""Reading a service's settings from the environment: each service declares one frozen settings dataclass
and builds it with these helpers in its `settings.py`; nothing else reads the environment.

Variables are named TUNESCOUT_<NAME>. A missing required one stops start-up with a message that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PREFIX = "TUNESCOUT_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    return value if value not in (None, "") else None


def required_str(env: Mapping[str, str], name: str) -> str:
    value = _raw(env, name)
    if value is None:
        raise SettingsError(f"{PREFIX}{name} is not set; it is required (for example host:port of a peer)")
    return value


def optional_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = _raw(env, name)
    return default if value is None else value


def integer(env: Mapping[str, str], name: str, default: int) -> int:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={value!r} is not an integer") from None


def number(env: Mapping[str, str], name: str, default: float) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={value!r} is not a number") from None


def path(env: Mapping[str, str], name: str, default: str | None) -> Path | None:
    value = _raw(env, name)
    if value is None:
        return None if default is None else Path(default)
    return Path(value)


def environ() -> Mapping[str, str]:
    """The process environment (the one place it is read)."""
    return os.environ
