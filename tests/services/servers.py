"""Reaching the real servers the tests use: skip with a reason when absent, fail in CI (CI=true)."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def require_redis(db: int = 0) -> redis.Redis:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required in CI at {REDIS_HOST}:{REDIS_PORT}: {exc}")
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc})")
    return client
