"""Per-tenant limits on the API, counted in Redis so every API replica shares them.

Two limits, both per tenant, both answered `429 rate_limited` with `Retry-After` to the
tenant over them while the others are not slowed:

- requests: `limits`' sliding-window counters (two integers per tenant and window, one
  round trip per request), the same library and Redis as the upstream pacing;
- uploads in progress (`UploadSlots`): request bodies being received at once. A body that
  trickles in holds an API thread for as long as it lasts, so one tenant's slow uploads
  could otherwise hold every thread. Each upload takes a slot, a member of a sorted set
  scored by when its lease ends; the lease outlasts the body-read deadline, so a live
  upload never loses its slot, and a slot whose API process died frees itself.

Counting a request is a write. A Redis that refuses writes (at maxmemory, or read-only)
would refuse every request; a request that writes nothing (a GET) is let through instead,
still refused when its tenant was already over a limit (a read of the counters).

This module owns both families (`keys.TENANT_LIMITS_PREFIX`, `keys.uploads`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping

import redis
from limits import RateLimitItem
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from visionq.errors import RateLimited
from visionq.settings import parse_limits
from visionq.state import keys
from visionq.state.redis import redis_errors, script
from visionq.state.storewrites import WriteRefusals, refusal_reason

#: How long a tenant at its upload cap is asked to wait: uploads end within seconds to the
#: body-read deadline, and which one ends first is unknown.
UPLOAD_RETRY_AFTER = 5
#: A slot's lease beyond the body-read deadline, for the time between taking it and the
#: first read: a live upload never outlives its lease.
UPLOAD_LEASE_MARGIN = 30.0


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))


class TenantLimits:
    def __init__(
        self,
        client: redis.Redis,
        limits_by_tenant: Mapping[str, str],
        refusals: WriteRefusals,
    ) -> None:
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=keys.TENANT_LIMITS_PREFIX
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items = {tenant: parse_limits(spec) for tenant, spec in limits_by_tenant.items()}
        self._refusals = refusals

    def hit(self, tenant: str, *, writes: bool = True) -> None:
        """Count one request of `tenant`; `RateLimited` when it is over any of its limits.

        `writes=False` for a request that writes nothing: when Redis refuses the count,
        the request is checked against the counters as they are and let through.
        """
        items = self._items.get(tenant, self._items.get("*", []))
        with redis_errors():
            try:
                for item in items:
                    if not self._limiter.hit(item, tenant):
                        self._refuse(item, tenant)
            except redis.RedisError as exc:
                reason = refusal_reason(exc)
                if writes or reason is None:
                    raise
                self._refusals.record(reason)
                for item in items:
                    if not self._limiter.test(item, tenant):
                        self._refuse(item, tenant)

    def _refuse(self, item: RateLimitItem, tenant: str) -> None:
        reset = self._limiter.get_window_stats(item, tenant).reset_time
        raise RateLimited(f"over this key's limit of {item}", retry_after=_seconds_until(reset))


class UploadSlot:
    """One upload's place under its tenant's cap; `release` when its body is read."""

    def __init__(self, client: redis.Redis, key: str, member: str) -> None:
        self._redis = client
        self._key = key
        self._member = member
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            with redis_errors():
                self._redis.zrem(self._key, self._member)


class UploadSlots:
    """At most `cap` request bodies per tenant being received at once, across replicas."""

    def __init__(
        self, client: redis.Redis, caps_by_tenant: Mapping[str, int], *, lease: float
    ) -> None:
        self._redis = client
        self._caps = dict(caps_by_tenant)
        self._lease_ms = max(1, int(lease * 1000))
        self._take = script(client, "tenantlimits/take_upload_slot")

    def take(self, tenant: str) -> UploadSlot | None:
        """A slot for one upload of `tenant` (None: no cap); `RateLimited` at the cap."""
        cap = self._caps.get(tenant, self._caps.get("*", 0))
        if cap <= 0:
            return None
        key = keys.uploads(tenant)
        member = uuid.uuid4().hex
        with redis_errors():
            taken = self._take(keys=[key], args=[member, cap, self._lease_ms])
        if not taken:
            raise RateLimited(
                f"this key already has {cap} uploads in progress; send this one when one "
                "of them has finished",
                retry_after=UPLOAD_RETRY_AFTER,
            )
        return UploadSlot(self._redis, key, member)
