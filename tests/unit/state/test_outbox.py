"""The webhook outbox on a real Redis: claims with tokens, and attempts settled once."""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import bare_job
from visionq import responses
from visionq.state.jobs import JobStore
from visionq.state.outbox import Outbox
from visionq.state.records import JobRecord


def _result(content: str) -> dict[str, object]:
    """A result in the shape the upstream step stores (models.Result)."""
    return {"content": content, "usage": {}, "response": {}}


def _finished_job(redis_db: redis.Redis) -> tuple[JobStore, JobRecord]:
    jobs = JobStore(redis_db, ttl=600, queued_grace=300)
    record = bare_job(jobs, webhook_url="http://127.0.0.1:9/hook")
    jobs.succeed(record.id, _result("x"))  # puts it in the outbox, due now
    return jobs, record


def test_a_task_with_a_stale_token_does_nothing(redis_db: redis.Redis) -> None:
    _, record = _finished_job(redis_db)
    outbox = Outbox(redis_db)
    now = time.time()
    [(job_id, first)] = outbox.claim_due(now=now, lease=0.05)
    # The first task waited in the queue past its lease.
    [(_, second)] = outbox.claim_due(now=now + 0.1, lease=60)
    assert job_id == record.id
    assert not outbox.begin(record.id, first, lease=60)
    assert outbox.begin(record.id, second, lease=60)
    assert not outbox.begin(record.id, second, lease=60)  # a duplicate of the same task


def test_a_redelivery_during_an_attempt_is_not_lost(redis_db: redis.Redis) -> None:
    jobs, record = _finished_job(redis_db)
    outbox = Outbox(redis_db)
    [(_, token)] = outbox.claim_due(now=time.time(), lease=60)
    assert outbox.begin(record.id, token, lease=60)
    state = jobs.load(record.id).fields["webhook"]  # the attempt reads its state
    outbox.redeliver(jobs, record.id, tenant="t")  # meanwhile the redis_db asks again
    settled = outbox.settle(
        record.id, {**state, "status": "delivered", "attempts": 1}, next_due=None
    )
    assert not settled
    webhook = responses.job_object(jobs.get(record.id, tenant="t"))["webhook"]
    assert webhook["status"] == "pending"
    assert webhook["attempts"] == 0
    assert outbox.due_at(record.id) is not None


def test_settle_writes_state_and_schedule_together(redis_db: redis.Redis) -> None:
    jobs, record = _finished_job(redis_db)
    outbox = Outbox(redis_db)
    state = jobs.load(record.id).fields["webhook"]
    due = time.time() + 300
    assert outbox.settle(record.id, {**state, "attempts": 1, "last_status_code": 500}, next_due=due)
    assert outbox.due_at(record.id) == pytest.approx(due)
    assert (
        responses.job_object(jobs.get(record.id, tenant="t"))["webhook"]["last_status_code"] == 500
    )
    assert outbox.settle(record.id, {**state, "status": "delivered", "attempts": 2}, next_due=None)
    assert outbox.due_at(record.id) is None
