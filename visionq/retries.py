"""When an upstream call that may succeed later is tried again, and why it was.

One place for the policy, because the broker's visibility timeout must outlast the longest
delay it can choose (`visionq.broker.celery_redis.visibility_timeout`).
"""

from __future__ import annotations

import random

#: The longest a retry's countdown may be, whatever the upstream's Retry-After says.
MAX_RETRY_DELAY = 600.0


def retry_delay(attempt: int, retry_after: float | None, *, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter, never sooner than the upstream's Retry-After."""
    backoff = random.uniform(0, min(cap, 0.5 * 2**attempt))
    return min(MAX_RETRY_DELAY, max(backoff, retry_after or 0.0))


def retry_reason(upstream_status: int | None) -> str:
    """The `reason` label of `visionq_upstream_retries` for a retryable failure."""
    if upstream_status is None:
        return "connection_error"
    if upstream_status == 429:
        return "rate_limited"
    if upstream_status >= 500:
        return "server_error"
    return "malformed_answer"  # a 200 whose body was not an answer
