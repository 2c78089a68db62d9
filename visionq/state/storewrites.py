"""Noticing a job store (Redis) that answers but refuses writes.

A Redis at `maxmemory` with `noeviction` refuses every command that may add data (OOM),
and a replica left behind by a failover refuses every write (READONLY); reads go on
working in both cases. `state.redis.redis_errors` turns both into `Unavailable` (the two
are listed once, in `state.redis.REFUSALS`); this module says which of them an error was
(`refusal_reason`), probes for it (`probe`, for `/readyz`, on a key of its own:
`keys.probe`), and makes it visible to an operator: each refusal counts in
`visionq_redis_write_refusals_total{reason}`, and a warning is logged at most once a
minute per process with the number refused since the last one, so a full store
produces an alertable signal rather than one log line per request.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from visionq.ops import metrics
from visionq.state import keys
from visionq.state.redis import REFUSALS, redis_errors

log = logging.getLogger(__name__)

#: A refused write is logged at most this often per process.
LOG_EVERY_SECONDS = 60.0
#: The probe key outlives a few missed probes, then goes by itself.
PROBE_TTL_SECONDS = 60


def refusal_reason(exc: BaseException) -> str | None:
    """`maxmemory` or `readonly` when `exc` (or what it was raised from) is a refused
    write; None for anything else, an unreachable Redis included."""
    seen: BaseException | None = exc
    while seen is not None:
        for refusal in REFUSALS:
            if isinstance(seen, refusal.error):
                return refusal.reason
        seen = seen.__cause__
    return None


class WriteRefusals:
    """Counts refused writes and logs them, rate-limited; one per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = -LOG_EVERY_SECONDS

    def record(self, reason: str) -> None:
        metrics.REDIS_WRITE_REFUSALS.labels(reason).inc()
        now = time.monotonic()
        with self._lock:
            self._unlogged += 1
            if now - self._logged_at < LOG_EVERY_SECONDS:
                return
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning(
            "the job store (Redis) refuses writes (%s): %d refused in this process since "
            "the last such line; submits answer 503 until it accepts them again",
            reason,
            count,
            extra={"reason": reason, "refused": count},
        )


class WriteProbe:
    """A small write with a TTL, one key per process: the cheapest question that fails
    exactly when a submit would (a SET is refused at maxmemory; a PING is not)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._key = keys.probe(socket.gethostname(), os.getpid())

    def probe(self) -> None:
        """Raise `Unavailable` when Redis cannot be reached or refuses writes."""
        with redis_errors():
            self._redis.set(self._key, repr(time.time()), ex=PROBE_TTL_SECONDS)
