"""Settings of the results service, from TUNESCOUT_* environment variables (stores come from config.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tunescout.common import settings as s


@dataclass(frozen=True)
class ResultsSettings:
    host: str  # TUNESCOUT_HOST
    port: int  # TUNESCOUT_PORT (gRPC)
    config_path: Path | None  # TUNESCOUT_CONFIG: config.json; unset = the embedded default
    data_dir: Path  # TUNESCOUT_DATA_DIR: where embedded result stores with relative paths live
    grace_s: float  # TUNESCOUT_GRACE_S

    log_format: str = "auto"  # TUNESCOUT_LOG_FORMAT: json, text, or auto (json unless stderr is a terminal)

    metrics_port: int = 0  # TUNESCOUT_METRICS_PORT: Prometheus /metrics on this port (0: off)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ResultsSettings:
        return cls(
            host=s.optional_str(env, "HOST", "127.0.0.1") or "127.0.0.1",
            port=s.integer(env, "PORT", 50053),
            config_path=s.path(env, "CONFIG", None),
            data_dir=s.path(env, "DATA_DIR", "data") or Path("data"),
            grace_s=s.number(env, "GRACE_S", 10.0),
            log_format=s.optional_str(env, "LOG_FORMAT", "auto") or "auto",
            metrics_port=s.integer(env, "METRICS_PORT", 0),
        )
