"""The webhook outbox: a Redis sorted set of job ids, scored by when delivery is next due.

The terminal transition in `jobs` adds a job here in the same Lua step that finishes it,
so no crash between finishing and delivering can lose the event. A dispatcher claims due
entries by pushing their score a lease into the future; a delivery that dies with its
worker simply comes due again when the lease runs out (at least once, one webhook-id).
Retries on the schedule are the same mechanism with a later score, which is why they need
no Celery countdown (a countdown of hours outlives the broker's visibility timeout).
"""

from __future__ import annotations

import time

import redis

from visionq.errors import Conflict
from visionq.jobs import OUTBOX_KEY, JobRecord, JobStore, redis_errors

# KEYS[1] outbox; ARGV[1] now, ARGV[2] lease end, ARGV[3] how many.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)

    def claim_due(self, *, now: float, lease: float, limit: int = 200) -> list[str]:
        with redis_errors():
            ids = self._claim(keys=[OUTBOX_KEY], args=[now, now + lease, limit])
        return [i.decode() for i in ids]

    def schedule(self, job_id: str, *, at: float) -> None:
        with redis_errors():
            self._redis.zadd(OUTBOX_KEY, {job_id: at})

    def done(self, job_id: str) -> None:
        with redis_errors():
            self._redis.zrem(OUTBOX_KEY, job_id)

    def due_at(self, job_id: str) -> float | None:
        with redis_errors():
            return self._redis.zscore(OUTBOX_KEY, job_id)

    def redeliver(self, jobs: JobStore, job_id: str, *, tenant: str) -> JobRecord:
        """Send a finished job's event again, same webhook-id, on a fresh schedule."""
        record = jobs.get(job_id, tenant=tenant)
        state = record.fields.get("webhook")
        if state is None:
            raise Conflict(f"job {job_id} has no webhook", param="id")
        if not record.finished:
            raise Conflict(
                f"job {job_id} is {record.status}; its event comes when it finishes", param="id"
            )
        jobs.record_webhook(job_id, {**state, "status": "pending", "attempts": 0})
        self.schedule(job_id, at=time.time())
        return jobs.get(job_id, tenant=tenant)
