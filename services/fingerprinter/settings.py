"""Settings of the fingerprinter, from TUNESCOUT_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tunescout.common import settings as s


@dataclass(frozen=True)
class FingerprinterSettings:
    host: str  # TUNESCOUT_HOST
    port: int  # TUNESCOUT_PORT (gRPC)
    workers: int  # TUNESCOUT_WORKERS: decoder/fingerprint processes; default: one per core
    max_upload_bytes: int  # TUNESCOUT_MAX_UPLOAD_MB: a hard cap whatever the gateway allows
    spool_dir: Path | None  # TUNESCOUT_SPOOL_DIR: where uploads are spooled for the workers (default: tmp)
    grace_s: float  # TUNESCOUT_GRACE_S: how long calls in flight may finish after SIGTERM

    log_format: str = "auto"  # TUNESCOUT_LOG_FORMAT: json, text, or auto (json unless stderr is a terminal)

    metrics_port: int = 0  # TUNESCOUT_METRICS_PORT: Prometheus /metrics on this port (0: off)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FingerprinterSettings:
        return cls(
            host=s.optional_str(env, "HOST", "127.0.0.1") or "127.0.0.1",
            port=s.integer(env, "PORT", 50051),
            workers=max(1, s.integer(env, "WORKERS", os.cpu_count() or 1)),
            max_upload_bytes=int(s.number(env, "MAX_UPLOAD_MB", 2048) * 1024 * 1024),
            spool_dir=s.path(env, "SPOOL_DIR", None),
            grace_s=s.number(env, "GRACE_S", 10.0),
            log_format=s.optional_str(env, "LOG_FORMAT", "auto") or "auto",
            metrics_port=s.integer(env, "METRICS_PORT", 0),
        )
