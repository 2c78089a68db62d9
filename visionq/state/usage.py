"""Reading the usage counters: each tenant's hours (UTC) of `model|account|counter` counts,
which `jobs/transition` adds to in the step that finishes a job (so each job counts once),
and each tenant's tokens per day and month, which the quotas read.

This module reads `keys.USAGE_PREFIX`, `keys.USAGE_TENANTS` and `keys.QUOTA_PREFIX`; the
one writer is `jobs/transition` (`visionq.state.jobs`), whose finish is what is counted.
It owns the quotas' holds (`keys.quota_held`): room a paid call takes in its tenant's
quota before it is made, so that workers on every host racing for the last tokens of a
quota cannot together pass it; the finish then counts what the call used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from visionq.errors import QuotaExceeded
from visionq.settings import Quota
from visionq.state import keys
from visionq.state.redis import redis_errors, script
from visionq.usage import period

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


class Quotas:
    """`VISIONQ_TENANT_QUOTAS` against the counters: at submit, and before each paid call."""

    def __init__(self, client: redis.Redis, quota_of: dict[str, Quota | None]) -> None:
        self._redis = client
        self._usage = UsageStore(client)
        self._quota_of = quota_of
        self._reserve = script(client, "usage/reserve")

    def _quota(self, tenant: str) -> Quota | None:
        return self._quota_of.get(tenant, self._quota_of.get("*"))

    def check(self, tenant: str, *, now: float) -> None:
        """Refuse new work once the period's quota is spent (429, `Retry-After` at the
        period's end)."""
        quota = self._quota(tenant)
        if quota is None:
            return
        name, ends = period(quota, now)
        used = self._usage.tokens(tenant, name)
        if used >= quota.tokens:
            raise _exceeded(quota, used, ends - now)

    def hold(self, tenant: str, job_id: str, tokens: int, *, now: float, lease: float) -> None:
        """Take room for one call of `tokens` (its input's estimate), or refuse when it
        would pass the quota with what was used and what calls in flight hold."""
        quota = self._quota(tenant)
        if quota is None:
            return
        name, ends = period(quota, now)
        with redis_errors():
            held = self._reserve(
                keys=[keys.quota(tenant, name), keys.quota_held(tenant, name)],
                args=[now, quota.tokens, job_id, tokens, now + lease, int(ends - now) + 86400],
            )
        if not held:
            raise _exceeded(quota, None, ends - now)

    def release(self, tenant: str, job_id: str, tokens: int, *, now: float) -> None:
        """The call that `hold` took `tokens` for is over (its finish counted what it
        used): let go of its hold."""
        quota = self._quota(tenant)
        if quota is None:
            return
        name, _ = period(quota, now)
        with redis_errors():
            self._redis.zrem(keys.quota_held(tenant, name), f"{job_id}|{tokens}")


def _exceeded(quota: Quota, used: int | None, seconds_left: float) -> QuotaExceeded:
    spent = "is spent" if used is not None else "has no room for this call"
    return QuotaExceeded(
        f"the tenant's quota of {quota.tokens} tokens a {quota.period} {spent}; "
        f"it renews in {seconds_left:.0f} s",
        retry_after=max(1.0, seconds_left),
    )
