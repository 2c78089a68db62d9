"""`GET /v1/usage`'s answer: the hourly counters summed into the buckets asked for
(API.md, "Usage, cost and quotas").

Buckets are by time (`hour`, `day`: UTC), by `model`, `account` or `tenant`, or by several
of these at once (`group_by=day,model`). With time alone, every bucket of the range is
there, empty ones too, so a chart of the days has no gaps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from visionq.state.usage import HOUR, Row
from visionq.usage import TOKEN_FIELDS, dollars

GROUPS = ("hour", "day", "model", "account", "tenant")
DAY = 86400
STATUSES = ("succeeded", "failed", "canceled")


def usage_report(
    rows: Iterable[Row], *, start: float, end: float, group_by: tuple[str, ...], priced: bool
) -> dict[str, Any]:
    """The answer for `rows` (the tenant's hours in [start, end)); `priced`: prices are
    configured, so buckets carry `cost`."""
    period = DAY if "day" in group_by else HOUR if "hour" in group_by else None
    sums: dict[tuple[Any, ...], dict[str, int]] = {}
    total: dict[str, int] = {}
    for row in rows:
        bucket = _bucket(row, group_by, period)
        counts = sums.setdefault(bucket, {})
        for name, n in row.counters.items():
            counts[name] = counts.get(name, 0) + n
            total[name] = total.get(name, 0) + n
    if period is not None and set(group_by) <= {"hour", "day"}:
        first = int(start) // period * period
        for at in range(first, int(end), period):
            sums.setdefault((at,), {})
    data = [
        _labels(bucket, group_by, period, start, end) | _counters(counts, priced)
        for bucket, counts in sorted(sums.items(), key=lambda item: [str(k) for k in item[0]])
    ]
    if period is not None:
        data.sort(key=lambda b: b["start_time"])
    return {
        "object": "usage",
        "start_time": int(start),
        "end_time": int(end),
        "group_by": list(group_by),
        "data": data,
        "total": _counters(total, priced),
    }


def _bucket(row: Row, group_by: tuple[str, ...], period: int | None) -> tuple[Any, ...]:
    out: list[Any] = []
    if period is not None:
        out.append(row.hour // period * period)
    for name in ("model", "account", "tenant"):
        if name in group_by:
            out.append(getattr(row, name))
    return tuple(out)


def _labels(
    bucket: tuple[Any, ...], group_by: tuple[str, ...], period: int | None, start: float, end: float
) -> dict[str, Any]:
    values = list(bucket)
    if period is not None:
        at = values.pop(0)
        labels: dict[str, Any] = {
            "start_time": max(int(start), at),
            "end_time": min(int(end), at + period),
        }
    else:
        labels = {"start_time": int(start), "end_time": int(end)}
    for name in ("model", "account", "tenant"):
        if name in group_by:
            labels[name] = values.pop(0) or None
    return labels


def _counters(counts: dict[str, int], priced: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "requests": counts.get("requests", 0),
        "jobs": {status: counts.get(f"jobs_{status}", 0) for status in STATUSES},
        **{name: counts.get(name, 0) for name in TOKEN_FIELDS},
    }
    if priced:
        out["cost"] = dollars(counts.get("cost_nanos", 0))
    return out
