"""Opening the shards named in config.json's `instances`: every backend implements the FingerprintShard
protocol (tunescout.store.shard)."""

from __future__ import annotations

from pathlib import Path

from tunescout.common.config import ConfigError, StoreConfig
from tunescout.engine.params import FINGERPRINT_VERSION
from tunescout.store.clickhouse import ClickHouseShard
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.mysql import MySQLShard
from tunescout.store.shard import FingerprintShard

SUPPORTED_TYPES = ("embedded", "mysql", "clickhouse")


def check_supported(store: StoreConfig) -> None:
    """ConfigError (at start-up, not at the first request) for a type this release cannot open."""
    if store.database_type in SUPPORTED_TYPES:
        return
    raise ConfigError(
        f"instance {store.name!r}: database_type {store.database_type!r} is not available; "
        f"use one of {', '.join(SUPPORTED_TYPES)}"
    )


def open_shard(store: StoreConfig, data_dir: Path) -> FingerprintShard:
    """Opens (creating its database or directory if missing) the shard `store` describes.

    Raises StoreError when its server cannot be reached, StoreFormatError when it holds another version."""
    check_supported(store)
    db = store.database
    if store.database_type == "clickhouse":
        return ClickHouseShard(
            host=db.host, port=db.port, user=db.user, password=db.password, database=db.database,
            fingerprint_version=FINGERPRINT_VERSION,
        )  # fmt: skip
    if store.database_type == "mysql":
        return MySQLShard(
            host=db.host, port=db.port or 3306, user=db.user, password=db.password, database=db.database,
            fingerprint_version=FINGERPRINT_VERSION,
        )  # fmt: skip
    path = Path(db.path or f"shards/{store.name}")
    return EmbeddedShard(
        path if path.is_absolute() else data_dir / path, fingerprint_version=FINGERPRINT_VERSION
    )
