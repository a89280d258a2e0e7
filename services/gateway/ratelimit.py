"""Rate limits per client IP through the `limits` library: in Redis when configured, in memory otherwise.

A Redis fault lets requests through (logged, then Redis is tried again after a pause): a cache or limiter
outage must not take the API down.
"""

from __future__ import annotations

import logging
import math
import time

import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from services.gateway.errors import ApiError
from tunescout.common.config import Config

logger = logging.getLogger(__name__)

RETRY_AFTER_FAULT_S = 5.0


class RateLimiter:
    def __init__(self, config: Config) -> None:
        storage: Storage
        if config.redis is not None:
            url = config.redis.url(config.rate_limits.redis_db_index).replace("redis://", "async+redis://", 1)
            storage = RedisStorage(
                url,
                implementation="redispy",
                key_prefix=f"{config.redis.prefix}:ratelimit",
                socket_timeout=0.25,
                socket_connect_timeout=0.25,
                retry=AsyncRetry(NoBackoff(), 0),  # no backoff stalls per request while Redis is down
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        rl = config.rate_limits
        self._limits = {
            "recognizing": limits.parse_many(rl.recognizing),
            "fingerprinting": limits.parse_many(rl.fingerprinting),
            "fetching_results": limits.parse_many(rl.fetching_results),
        }
        self._down_until = 0.0

    async def check(self, category: str, client: str) -> None:
        """Counts one request of `client`; ApiError 429 with Retry-After when a limit is exceeded."""
        if time.monotonic() < self._down_until:
            return
        try:
            for item in self._limits[category]:
                if not await self._limiter.hit(item, category, client):
                    stats = await self._limiter.get_window_stats(item, category, client)
                    retry = max(1, math.ceil(stats.reset_time - time.time()))
                    raise ApiError(
                        429,
                        f"Too many requests: the limit is {item}; retry in {retry} s",
                        headers={"Retry-After": str(retry)},
                    )
        except ApiError:
            raise
        except Exception as exc:  # the storage is down: let the request through
            if time.monotonic() >= self._down_until:
                logger.warning(
                    "rate limits not enforced for %.0f s: storage error: %s", RETRY_AFTER_FAULT_S, exc
                )
            self._down_until = time.monotonic() + RETRY_AFTER_FAULT_S
