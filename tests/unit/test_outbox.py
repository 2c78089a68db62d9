"""The webhook outbox on a real Redis: claims with tokens, and attempts settled once."""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import bare_job
from visionq.jobs import JobRecord, JobStore
from visionq.outbox import Outbox


def _finished_job(redis_db: redis.Redis) -> tuple[JobStore, JobRecord]:
    jobs = JobStore(redis_db, ttl=600, queued_grace=300)
    record = bare_job(jobs, webhook_url="http://127.0.0.1:9/hook")
    jobs.succeed(record.id, {"content": "x"})  # puts it in the outbox, due now
    return jobs, record


def test_a_task_with_a_stale_token_does_nothing(redis_db: redis.Redis) -> None:
    _, record = _finished_job(redis_db)
    outbox = Outbox(redis_db)
    [(job_id, first)] = outbox.claim_due(now=time.time(), lease=0.05)
    time.sleep(0.1)  # the first task waited in the queue past its lease
    [(_, second)] = outbox.claim_due(now=time.time(), lease=60)
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
    webhook = jobs.get(record.id, tenant="t").public()["webhook"]
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
    assert jobs.get(record.id, tenant="t").public()["webhook"]["last_status_code"] == 500
    assert outbox.settle(record.id, {**state, "status": "delivered", "attempts": 2}, next_due=None)
    assert outbox.due_at(record.id) is None
