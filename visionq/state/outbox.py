"""The webhook outbox: a Redis sorted set of job ids, scored by when delivery is next due.

The terminal transition in `jobs` adds a job here in the same Lua step that finishes it,
so no crash between finishing and delivering can lose the event. A dispatcher claims due
entries by pushing their score a lease into the future and hands that score to the task
as its token: a task whose token no longer matches (a duplicate, or one that waited in a
backed-up queue past its lease) does nothing, so retries keep to the schedule. A delivery
that dies with its worker comes due again when the lease runs out (at least once, one
webhook-id). Retries are later scores, not Celery countdowns (a countdown of hours would
outlive the broker's visibility timeout).

This module owns the delivery state in the job's `webhook` field. Each attempt settles in
one Lua step (state and outbox together) and only if no redelivery started meanwhile: a
redelivery bumps the state's `generation`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from visionq.errors import Conflict
from visionq.state.jobs import OUTBOX_KEY, JobRecord, JobStore, job_key, redis_errors

# KEYS[1] outbox; ARGV[1] now, ARGV[2] lease end, ARGV[3] how many.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS[1] outbox; ARGV[1] id, ARGV[2] token, ARGV[3] new lease end. 1 when the token holds.
_BEGIN = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# KEYS[1] job, KEYS[2] outbox; ARGV[1] id, ARGV[2] generation the attempt began with,
# ARGV[3] new state (JSON), ARGV[4] next due time or "" when finished.
_SETTLE = """
local raw = redis.call('HGET', KEYS[1], 'webhook')
if not raw or raw == 'null' then return 0 end
local state = cjson.decode(raw)
if tostring(state['generation'] or 0) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'webhook', ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 1
"""

# KEYS[1] job, KEYS[2] outbox; ARGV[1] id, ARGV[2] now.
_REDELIVER = """
local raw = redis.call('HGET', KEYS[1], 'webhook')
if not raw or raw == 'null' then return 'none' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'succeeded' and status ~= 'failed' and status ~= 'canceled' then
  return 'unfinished'
end
local state = cjson.decode(raw)
state['generation'] = (state['generation'] or 0) + 1
state['status'] = 'pending'
state['attempts'] = 0
redis.call('HSET', KEYS[1], 'webhook', cjson.encode(state))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'ok'
"""


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)
        self._begin = client.register_script(_BEGIN)
        self._settle = client.register_script(_SETTLE)
        self._redeliver = client.register_script(_REDELIVER)

    def claim_due(self, *, now: float, lease: float, limit: int = 200) -> list[tuple[str, str]]:
        """Due job ids, each with the token its delivery task must present."""
        token = repr(now + lease)
        with redis_errors():
            ids = self._claim(keys=[OUTBOX_KEY], args=[now, token, limit])
        return [(i.decode(), token) for i in ids]

    def begin(self, job_id: str, token: str, *, lease: float) -> bool:
        """True if this task's claim still holds; the entry then gets a fresh lease."""
        with redis_errors():
            return bool(self._begin(keys=[OUTBOX_KEY], args=[job_id, token, time.time() + lease]))

    def settle(self, job_id: str, state: dict[str, Any], *, next_due: float | None) -> bool:
        """Record an attempt's outcome and the next due time (None: no more attempts)."""
        with redis_errors():
            return bool(
                self._settle(
                    keys=[job_key(job_id), OUTBOX_KEY],
                    args=[
                        job_id,
                        str(state.get("generation") or 0),
                        json.dumps(state, separators=(",", ":")),
                        "" if next_due is None else repr(next_due),
                    ],
                )
            )

    def done(self, job_id: str) -> None:
        with redis_errors():
            self._redis.zrem(OUTBOX_KEY, job_id)

    def due_at(self, job_id: str) -> float | None:
        with redis_errors():
            return self._redis.zscore(OUTBOX_KEY, job_id)

    def redeliver(self, jobs: JobStore, job_id: str, *, tenant: str) -> JobRecord:
        """Send a finished job's event again, same webhook-id, on a fresh schedule."""
        jobs.get(job_id, tenant=tenant)  # ownership: another tenant's job is not found
        with redis_errors():
            outcome = self._redeliver(
                keys=[job_key(job_id), OUTBOX_KEY], args=[job_id, time.time()]
            ).decode()
        if outcome == "none":
            raise Conflict(f"job {job_id} has no webhook", param="id")
        if outcome == "unfinished":
            raise Conflict(f"job {job_id} is not finished; its event comes when it is", param="id")
        return jobs.get(job_id, tenant=tenant)
