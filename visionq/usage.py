"""What a finished job used upstream and what it cost, in the counters usage is kept in
(API.md, "Usage, cost and quotas").

The upstream's `usage` comes in two dialects and with optional details; here it becomes
one set of whole-number counters per job, which `jobs/transition` adds to the tenant's
hour once, in the step that finishes the job (so a retried job, or one finished by
another worker, is counted once). Cost is counted in nano-dollars, whole numbers, so that
a year of sums does not drift; it is worked out at the finish from `VISIONQ_PRICES` as
they were then, as an invoice would be.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from typing import Any

from visionq.settings import Price, Quota

#: The token counters of a bucket, as `GET /v1/usage` names them.
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "image_tokens",
)
#: Nano-dollars in a dollar; prices are per million tokens, so a token costs
#: `price * NANOS / 1e6` nano-dollars.
NANOS = 1_000_000_000


def counters(
    usage: Mapping[str, Any] | None, *, status: str, image_tokens: int, price: Price | None
) -> dict[str, int]:
    """The counters one finished job adds: its status, and for an answered call its tokens
    and cost. `image_tokens`: the service's own count, for an upstream that gives none."""
    out = {f"jobs_{status}": 1}
    if usage is None:
        return out
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = min(prompt, int(prompt_details.get("cached_tokens") or 0))
    out |= {
        "requests": 1,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0),
        "cached_tokens": cached,
        "image_tokens": int(prompt_details.get("image_tokens") or image_tokens),
    }
    if price is not None:
        out["cost_nanos"] = cost_nanos(prompt, cached, completion, price)
    return {name: n for name, n in out.items() if n}


def cost_nanos(prompt: int, cached: int, completion: int, price: Price) -> int:
    """Cached input at its own price, the rest of the input at the input price."""
    per_million = (
        (prompt - cached) * price.input + cached * price.cached_input + completion * price.output
    )
    return round(per_million * NANOS / 1_000_000)


def dollars(nanos: int) -> float:
    return round(nanos / NANOS, 9)


def period(quota: Quota, now: float) -> tuple[str, float]:
    """The quota's current period (UTC) as its counter names it (YYYYMMDD or YYYYMM), and
    when it ends."""
    day = time.gmtime(now)
    if quota.period == "day":
        start = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0))
        return time.strftime("%Y%m%d", day), start + 86400.0
    year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
    return time.strftime("%Y%m", day), float(calendar.timegm((year, month, 1, 0, 0, 0)))
