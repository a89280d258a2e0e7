"""The TuneScout `config.json`, as its README documents it, plus the embedded store type.

Every service reads the same file; each takes the sections it needs. Sections left out get defaults: no
`instances` means one embedded shard under the data directory, no `results` one embedded result store, no
`redis` an in-process cache and in-memory rate limits. Both layouts of rate limits in the wild are read: the
README's `"rate_limit": {"recognizing": "10 per second", ...}` and the per-section
`"recognizing": {"rate_limit": "10 per second"}`; the `rate_limit` section wins where both are given.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import limits

logger = logging.getLogger(__name__)

DATABASE_TYPES = ("embedded", "clickhouse", "mysql")
DEFAULT_PORTS = {"mysql": 3306, "clickhouse": 9000}
DEFAULT_RATE_LIMITS = {
    "fetching_results": "50 per second",
    "recognizing": "10 per second",
    "fingerprinting": "10 per second",
}
_KNOWN_SECTIONS = {
    "fingerprinting",
    "recognizing",
    "fetching_results",
    "redis",
    "rate_limit",
    "allowed_origin",
    "instances",
    "results",
}


class ConfigError(ValueError):
    """config.json is unreadable or holds a value of the wrong kind; the message names the key."""


@dataclass(frozen=True)
class DatabaseConfig:
    """Where one store lives. `path` is for the embedded type (relative paths are under the data dir)."""

    host: str = "127.0.0.1"
    user: str | None = None
    password: str | None = None
    database: str | None = None
    port: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class StoreConfig:
    """One entry of `instances` (fingerprint shards) or `results` (result stores)."""

    name: str
    database_type: str
    database: DatabaseConfig
    redis_db_index: int = 0  # shards only: the Redis database that caches this shard's lookups


@dataclass(frozen=True)
class RedisConfig:
    host: str = "localhost"
    port: int = 6379
    user: str | None = None
    password: str | None = None
    prefix: str = "tunescout"

    def url(self, db: int) -> str:
        """A redis:// URL for database `db` (credentials included when configured)."""
        auth = ""
        if self.user or self.password:
            from urllib.parse import quote

            auth = f"{quote(self.user or '', safe='')}:{quote(self.password or '', safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}/{db}"


@dataclass(frozen=True)
class RateLimits:
    """Per client IP, in the `limits` notation ("10 per second", "100/minute")."""

    fetching_results: str = DEFAULT_RATE_LIMITS["fetching_results"]
    recognizing: str = DEFAULT_RATE_LIMITS["recognizing"]
    fingerprinting: str = DEFAULT_RATE_LIMITS["fingerprinting"]
    redis_db_index: int = 0


@dataclass(frozen=True)
class Config:
    fingerprinting_allowed: bool = True
    fingerprint_token: str | None = None  # None: a random token is kept in the data dir
    max_duration_s: float | None = None  # recognition reads at most this much of a clip; None = no limit
    max_file_size_mb: float | None = None  # uploads larger than this are refused with 413
    redis: RedisConfig | None = None
    rate_limits: RateLimits = field(default_factory=RateLimits)
    allowed_origins: tuple[str, ...] = ()
    instances: tuple[StoreConfig, ...] = ()
    results: tuple[StoreConfig, ...] = ()
    source: str = "(defaults)"  # where it was read from, for messages

    @property
    def max_file_size_bytes(self) -> int | None:
        return None if self.max_file_size_mb is None else int(self.max_file_size_mb * 1024 * 1024)


def default_instances() -> tuple[StoreConfig, ...]:
    return (StoreConfig("shard0", "embedded", DatabaseConfig(path="shards/shard0")),)


def default_results() -> tuple[StoreConfig, ...]:
    return (StoreConfig("results0", "embedded", DatabaseConfig(path="results/results0.sqlite")),)


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Config from a config.json file, or the embedded defaults when `path` is None.

    With `environ`, `${NAME}` inside string values is replaced by that variable (secrets such as passwords
    and the fingerprint token stay out of the file, e.g. in Docker Compose's .env); an unset one is an error.
    """
    if path is None:
        return parse_config({}, source="(defaults)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if environ is not None:
        raw = _substitute(raw, environ, str(path))
    return parse_config(raw, source=str(path))


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, environ: Mapping[str, str], source: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, environ, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, source) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"{source} refers to ${{{name}}}, which is not set in the environment")
        return environ[name]

    return _VARIABLE.sub(one, value)


def parse_config(raw: Any, source: str = "config.json") -> Config:
    """Validates a decoded config.json; a wrong value raises ConfigError naming its key."""
    r = _Reader(source)
    obj = r.mapping(raw, "")
    unknown = set(obj) - _KNOWN_SECTIONS
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", source, ", ".join(sorted(unknown)))

    fp = r.mapping(obj.get("fingerprinting", {}), "fingerprinting")
    rec = r.mapping(obj.get("recognizing", {}), "recognizing")
    fetch = r.mapping(obj.get("fetching_results", {}), "fetching_results")
    rl = r.mapping(obj.get("rate_limit", {}), "rate_limit")

    token = r.optional_str(fp.get("token"), "fingerprinting.token")
    max_duration = r.optional_number(rec.get("max_duration"), "recognizing.max_duration")
    max_size = r.optional_number(rec.get("max_file_size_mb"), "recognizing.max_file_size_mb")

    def limit(name: str, section: dict[str, Any]) -> str:
        value = rl.get(name, section.get("rate_limit", DEFAULT_RATE_LIMITS[name]))
        where = f"rate_limit.{name}" if name in rl else f"{name}.rate_limit"
        text = r.string(value, where)
        try:
            limits.parse_many(text)
        except ValueError as exc:
            raise ConfigError(
                f'{source}: {where} = {text!r} is not a rate limit; write it like "10 per second"'
            ) from exc
        return text

    redis_raw = obj.get("redis")
    redis = None
    if redis_raw is not None:
        red = r.mapping(redis_raw, "redis")
        redis = RedisConfig(
            host=r.string(red.get("host", "localhost"), "redis.host"),
            port=r.integer(red.get("port", 6379), "redis.port"),
            user=r.optional_str(red.get("user"), "redis.user"),
            password=r.optional_str(red.get("password"), "redis.password"),
            prefix=r.optional_str(red.get("prefix"), "redis.prefix") or "tunescout",
        )

    origins_raw = obj.get("allowed_origin", [])
    if isinstance(origins_raw, str):
        origins_raw = [origins_raw]
    origins = tuple(
        r.string(o, f"allowed_origin[{i}]") for i, o in enumerate(r.sequence(origins_raw, "allowed_origin"))
    )

    instances = _stores(r, obj.get("instances"), "instances", "shard") or default_instances()
    results = _stores(r, obj.get("results"), "results", "results") or default_results()

    return Config(
        fingerprinting_allowed=r.boolean(fp.get("allow", True), "fingerprinting.allow"),
        fingerprint_token=token or None,
        max_duration_s=max_duration if max_duration and max_duration > 0 else None,
        max_file_size_mb=max_size if max_size and max_size > 0 else None,
        redis=redis,
        rate_limits=RateLimits(
            fetching_results=limit("fetching_results", fetch),
            recognizing=limit("recognizing", rec),
            fingerprinting=limit("fingerprinting", fp),
            redis_db_index=r.integer(rl.get("redis_db_index", 0), "rate_limit.redis_db_index"),
        ),
        allowed_origins=origins,
        instances=instances,
        results=results,
        source=source,
    )


def _stores(r: _Reader, raw: Any, key: str, stem: str) -> tuple[StoreConfig, ...]:
    if raw is None:
        return ()
    stores: list[StoreConfig] = []
    for i, item in enumerate(r.sequence(raw, key)):
        where = f"{key}[{i}]"
        entry = r.mapping(item, where)
        kind = r.string(entry.get("database_type", "embedded"), f"{where}.database_type").lower()
        if kind not in DATABASE_TYPES:
            raise ConfigError(
                f"{r.source}: {where}.database_type = {kind!r}; expected one of {', '.join(DATABASE_TYPES)}"
            )
        db = r.mapping(entry.get("database", {}), f"{where}.database")
        port = r.optional_int(db.get("port"), f"{where}.database.port")
        name = r.optional_str(entry.get("name"), f"{where}.name") or f"{stem}{i}"
        path = r.optional_str(db.get("path"), f"{where}.database.path")
        if kind == "embedded" and path is None:
            path = f"shards/{name}" if key == "instances" else f"results/{name}.sqlite"
        stores.append(
            StoreConfig(
                name=name,
                database_type=kind,
                database=DatabaseConfig(
                    host=r.string(db.get("host", "127.0.0.1"), f"{where}.database.host"),
                    user=r.optional_str(db.get("user"), f"{where}.database.user"),
                    password=r.optional_str(db.get("password"), f"{where}.database.password"),
                    database=r.optional_str(db.get("database"), f"{where}.database.database"),
                    port=port if port is not None else DEFAULT_PORTS.get(kind),
                    path=path,
                ),
                redis_db_index=r.integer(entry.get("redis_db_index", 0), f"{where}.redis_db_index"),
            )
        )
    names = [s.name for s in stores]
    if len(set(names)) != len(names):
        raise ConfigError(f"{r.source}: {key} has duplicate names {names}")
    if key == "instances":
        embedded = [s.database.path for s in stores if s.database_type == "embedded"]
        if len(set(embedded)) != len(embedded):
            raise ConfigError(f"{r.source}: two embedded instances share a path: {embedded}")
    return tuple(stores)


class _Reader:
    """Type checks that name the offending key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _fail(self, where: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.source}: {where or 'the top level'} should be {expected}, got {value!r}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._fail(where, "an object", value)
        return value

    def sequence(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self._fail(where, "a list", value)
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self._fail(where, "a string", value)
        return value

    def optional_str(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # a token or password written as a number
        return self.string(value, where)

    def integer(self, value: Any, where: str) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(where, "an integer", value)
        return value

    def optional_int(self, value: Any, where: str) -> int | None:
        return None if value is None else self.integer(value, where)

    def optional_number(self, value: Any, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise self._fail(where, "a number", value) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(where, "a number", value)
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.strip().lower() in {"true", "1", "yes"}
        raise self._fail(where, "true or false", value)
