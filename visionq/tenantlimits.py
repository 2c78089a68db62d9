"""Per-tenant request limits on the API, counted in Redis so every API replica shares them.

The counts are `limits`' sliding-window counters (two integers per tenant and window, one
round trip per request), the same library and Redis as the upstream pacing. A tenant over
its limit gets `429 rate_limited` with `Retry-After`; the others are not slowed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import redis
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from visionq.errors import RateLimited
from visionq.jobs import redis_errors
from visionq.settings import parse_limits


class TenantLimits:
    def __init__(self, client: redis.Redis, limits_by_tenant: Mapping[str, str]) -> None:
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix="vq:ratelimit"
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items = {tenant: parse_limits(spec) for tenant, spec in limits_by_tenant.items()}

    def hit(self, tenant: str) -> None:
        """Count one request of `tenant`; `RateLimited` when it is over any of its limits."""
        items = self._items.get(tenant, self._items.get("*", []))
        with redis_errors():
            for item in items:
                if not self._limiter.hit(item, tenant):
                    reset = self._limiter.get_window_stats(item, tenant).reset_time
                    raise RateLimited(
                        f"over this key's limit of {item}", retry_after=_seconds_until(reset)
                    )


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))
