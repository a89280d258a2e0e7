"""Settings of the matcher, from TUNESCOUT_* environment variables; shards and Redis come from config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tunescout.common import settings as s


@dataclass(frozen=True)
class MatcherSettings:
    host: str  # TUNESCOUT_HOST
    port: int  # TUNESCOUT_PORT (gRPC)
    config_path: Path | None  # TUNESCOUT_CONFIG: config.json; unset = the embedded default
    data_dir: Path  # TUNESCOUT_DATA_DIR: where embedded shards with relative paths live
    shard_deadline_s: float  # TUNESCOUT_SHARD_DEADLINE_S: a shard slower than this is left out of an answer
    cache_ttl_s: float  # TUNESCOUT_CACHE_TTL_S: how long a cached lookup lives
    memory_cache_mb: float  # TUNESCOUT_MEMORY_CACHE_MB: in-process cache size per shard when no Redis
    compact_idle_s: (
        float  # TUNESCOUT_COMPACT_IDLE_S: compact a shard after this long without writes (0: never)
    )
    grace_s: float  # TUNESCOUT_GRACE_S

    log_format: str = "auto"  # TUNESCOUT_LOG_FORMAT: json, text, or auto (json unless stderr is a terminal)

    metrics_port: int = 0  # TUNESCOUT_METRICS_PORT: Prometheus /metrics on this port (0: off)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MatcherSettings:
        return cls(
            host=s.optional_str(env, "HOST", "127.0.0.1") or "127.0.0.1",
            port=s.integer(env, "PORT", 50052),
            config_path=s.path(env, "CONFIG", None),
            data_dir=s.path(env, "DATA_DIR", "data") or Path("data"),
            shard_deadline_s=s.number(env, "SHARD_DEADLINE_S", 2.0),
            cache_ttl_s=s.number(env, "CACHE_TTL_S", 600.0),
            memory_cache_mb=s.number(env, "MEMORY_CACHE_MB", 64.0),
            compact_idle_s=s.number(env, "COMPACT_IDLE_S", 30.0),
            grace_s=s.number(env, "GRACE_S", 10.0),
            log_format=s.optional_str(env, "LOG_FORMAT", "auto") or "auto",
            metrics_port=s.integer(env, "METRICS_PORT", 0),
        )
