"""Opening the shards named in config.json's `instances`: every backend implements the FingerprintShard
protocol (tunescout.store.shard)."""

from __future__ import annotations

from pathlib import Path

from tunescout.common.config import ConfigError, StoreConfig
from tunescout.engine.params import FINGERPRINT_VERSION
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.shard import FingerprintShard

SUPPORTED_TYPES = ("embedded", "mysql")


def check_supported(store: StoreConfig) -> None:
    """ConfigError (at start-up, not at the first request) for a type this release cannot open."""
    if store.database_type in SUPPORTED_TYPES:
        return
    raise ConfigError(
        f"instance {store.name!r}: database_type {store.database_type!r} is not available in this version; "
        'use "embedded" (with a "path")'
    )


def open_shard(store: StoreConfig, data_dir: Path) -> FingerprintShard:
    """Opens (creating if missing) the shard `store` describes. Raises StoreError when it cannot."""
    check_supported(store)
    path = Path(store.database.path or f"shards/{store.name}")
    return EmbeddedShard(
        path if path.is_absolute() else data_dir / path, fingerprint_version=FINGERPRINT_VERSION
    )
