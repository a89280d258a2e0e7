"""Settings of the gateway, from TUNESCOUT_* environment variables; the API itself is set by config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tunescout.common import settings as s


@dataclass(frozen=True)
class GatewaySettings:
    host: str  # TUNESCOUT_HOST
    port: int  # TUNESCOUT_PORT (HTTP)
    config_path: Path | None  # TUNESCOUT_CONFIG: config.json; unset = the embedded default
    data_dir: Path  # TUNESCOUT_DATA_DIR: holds the fingerprint token file when config.json sets none
    fingerprinter_address: str  # TUNESCOUT_FINGERPRINTER_ADDRESS host:port (required)
    matcher_address: str  # TUNESCOUT_MATCHER_ADDRESS host:port (required)
    results_address: str  # TUNESCOUT_RESULTS_ADDRESS host:port (required)
    recognize_timeout_s: (
        float  # TUNESCOUT_RECOGNIZE_TIMEOUT_S: deadline of each backend call of a recognition
    )
    ingest_timeout_s: float  # TUNESCOUT_INGEST_TIMEOUT_S: deadline of each backend call of a fingerprinting
    forwarded_allow_ips: str  # TUNESCOUT_FORWARDED_ALLOW_IPS: proxies whose X-Forwarded-For is trusted

    log_format: str = "auto"  # TUNESCOUT_LOG_FORMAT: json, text, or auto (json unless stderr is a terminal)

    metrics_port: int = 0  # TUNESCOUT_METRICS_PORT: Prometheus /metrics on this port (0: off)

    fingerprint_token: str | None = (
        None  # TUNESCOUT_FINGERPRINT_TOKEN: wins over config.json (a container secret)
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewaySettings:
        return cls(
            host=s.optional_str(env, "HOST", "127.0.0.1") or "127.0.0.1",
            port=s.integer(env, "PORT", 8000),
            config_path=s.path(env, "CONFIG", None),
            data_dir=s.path(env, "DATA_DIR", "data") or Path("data"),
            fingerprinter_address=s.required_str(env, "FINGERPRINTER_ADDRESS"),
            matcher_address=s.required_str(env, "MATCHER_ADDRESS"),
            results_address=s.required_str(env, "RESULTS_ADDRESS"),
            recognize_timeout_s=s.number(env, "RECOGNIZE_TIMEOUT_S", 30.0),
            ingest_timeout_s=s.number(env, "INGEST_TIMEOUT_S", 900.0),
            forwarded_allow_ips=s.optional_str(env, "FORWARDED_ALLOW_IPS", "127.0.0.1") or "127.0.0.1",
            log_format=s.optional_str(env, "LOG_FORMAT", "auto") or "auto",
            metrics_port=s.integer(env, "METRICS_PORT", 0),
            fingerprint_token=s.optional_str(env, "FINGERPRINT_TOKEN", None),
        )
