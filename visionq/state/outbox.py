"""The webhook outbox: a Redis sorted set of job ids, scored by when delivery is next due.

The terminal transition in `jobs` adds a job here in the same Lua step that finishes it,
so no crash between finishing and delivering can lose the event. A dispatcher claims due
entries by pushing their score a lease into the future and hands that score to the task
as its token: a task whose token no longer matches (a duplicate, or one that waited in a
backed-up queue past its lease) does nothing, so retries keep to the schedule. A delivery
that dies with its worker comes due again when the lease runs out (at least once, one
webhook-id). Retries are later scores, not Celery countdowns (a countdown of hours would
outlive the broker's visibility timeout).

This module owns the outbox (`keys.OUTBOX`) and the delivery state in the job's
`webhook` field (and a batch's: its entries are batch ids, added by `batches/finish`).
Each attempt settles in one Lua step (state and outbox together) and only if no
redelivery started meanwhile: a redelivery bumps the state's `generation`. Two scripts
of `jobs` also write them, in the same step as the job: `jobs/create` writes the first
delivery state, and `jobs/transition` puts a finished job with a webhook in the outbox.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from visionq.errors import Conflict
from visionq.models import TERMINAL_STATUSES
from visionq.state import keys
from visionq.state.jobs import JobStore
from visionq.state.records import JobRecord
from visionq.state.redis import redis_errors, script


def _holder(event_of: str) -> str:
    """The hash whose `webhook` field an outbox entry's delivery state is: a job's, or an
    ended batch's (`batches/finish` puts a batch with a webhook here too)."""
    return keys.batch(event_of) if event_of.startswith("batch_") else keys.job(event_of)


#: What the redelivery script takes for finished.
_TERMINAL = " ".join(sorted(TERMINAL_STATUSES))


class Outbox:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = script(client, "outbox/claim")
        self._begin = script(client, "outbox/begin")
        self._settle = script(client, "outbox/settle")
        self._redeliver = script(client, "outbox/redeliver")

    def claim_due(self, *, now: float, lease: float, limit: int = 200) -> list[tuple[str, str]]:
        """Due job ids, each with the token its delivery task must present."""
        token = repr(now + lease)
        with redis_errors():
            ids = self._claim(keys=[keys.OUTBOX], args=[now, token, limit])
        return [(i.decode(), token) for i in ids]

    def begin(self, job_id: str, token: str, *, lease: float) -> bool:
        """True if this task's claim still holds; the entry then gets a fresh lease."""
        with redis_errors():
            return bool(self._begin(keys=[keys.OUTBOX], args=[job_id, token, time.time() + lease]))

    def settle(self, job_id: str, state: dict[str, Any], *, next_due: float | None) -> bool:
        """Record an attempt's outcome and the next due time (None: no more attempts)."""
        with redis_errors():
            return bool(
                self._settle(
                    keys=[_holder(job_id), keys.OUTBOX],
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
            self._redis.zrem(keys.OUTBOX, job_id)

    def due_at(self, job_id: str) -> float | None:
        with redis_errors():
            return self._redis.zscore(keys.OUTBOX, job_id)

    def redeliver(self, jobs: JobStore, job_id: str, *, tenant: str) -> JobRecord:
        """Send a finished job's event again, same webhook-id, on a fresh schedule."""
        jobs.get(job_id, tenant=tenant)  # ownership: another tenant's job is not found
        with redis_errors():
            outcome = self._redeliver(
                keys=[keys.job(job_id), keys.OUTBOX],
                args=[job_id, time.time(), _TERMINAL],
            ).decode()
        if outcome == "none":
            raise Conflict(f"job {job_id} has no webhook", param="id")
        if outcome == "unfinished":
            raise Conflict(f"job {job_id} is not finished; its event comes when it is", param="id")
        return jobs.get(job_id, tenant=tenant)
