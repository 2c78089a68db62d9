"""Reading the usage counters: each tenant's hours (UTC) of `model|account|counter` counts,
which `jobs/transition` adds to in the step that finishes a job (so each job counts once),
and each tenant's tokens per day and month, which the quotas read.

This module reads `keys.USAGE_PREFIX`, `keys.USAGE_TENANTS` and `keys.QUOTA_PREFIX`; the
one writer is `jobs/transition` (`visionq.state.jobs`), whose finish is what is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from visionq.state import keys
from visionq.state.redis import redis_errors

HOUR = 3600
#: Hashes read per round trip.
_PER_CALL = 500


@dataclass(frozen=True)
class Row:
    """One tenant's counters for one model and account in one hour."""

    tenant: str
    hour: int
    model: str
    account: str
    counters: dict[str, int]


def hour_name(hour: int) -> str:
    """The hour starting at Unix time `hour`, as the keys spell it (YYYYMMDDHH, UTC)."""
    return time.strftime("%Y%m%d%H", time.gmtime(hour))


class UsageStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def tenants(self) -> list[str]:
        """Every tenant with usage kept."""
        with redis_errors():
            raw = self._redis.smembers(keys.USAGE_TENANTS)
        return sorted(t.decode() for t in cast(set[bytes], raw))

    def rows(self, tenants: list[str], *, start: float, end: float) -> Iterator[Row]:
        """The counters of `tenants` in every hour that starts in [start, end)."""
        first = int(start) // HOUR * HOUR
        wanted = [(t, h) for t in tenants for h in range(first, int(end), HOUR) if h < end]
        for at in range(0, len(wanted), _PER_CALL):
            chunk = wanted[at : at + _PER_CALL]
            pipe = self._redis.pipeline(transaction=False)
            for tenant, hour in chunk:
                pipe.hgetall(keys.usage(tenant, hour_name(hour)))
            with redis_errors():
                answers = pipe.execute()
            for (tenant, hour), counts in zip(chunk, answers, strict=True):
                yield from _rows(tenant, hour, counts)

    def tokens(self, tenant: str, period: str) -> int:
        """`tenant`'s prompt and completion tokens in the day (YYYYMMDD) or month (YYYYMM)."""
        with redis_errors():
            return int(self._redis.get(keys.quota(tenant, period)) or 0)


def _rows(tenant: str, hour: int, counts: dict[bytes, bytes]) -> Iterator[Row]:
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for field, count in counts.items():
        model, account, name = field.decode().rsplit("|", 2)
        grouped.setdefault((model, account), {})[name] = int(count)
    for (model, account), counters in sorted(grouped.items()):
        yield Row(tenant, hour, model, account, counters)
