"""The batch record on a real Redis: a line is admitted once, its finish is counted once
on its batch in the job's own step, and a wake-up is never lost to the batch's lock."""

from __future__ import annotations

import time

import pytest
import redis

from tests.support import bare_job
from visionq.errors import BatchExpired, Canceled, InvalidImage, StaleLine
from visionq.state import keys
from visionq.state.batches import BatchFields, BatchRecord, BatchStore
from visionq.state.jobs import BatchLine, JobStore
from visionq.state.leases import Leases


@pytest.fixture
def woken() -> list[str]:
    return []


@pytest.fixture
def jobs(redis_db: redis.Redis, woken: list[str]) -> JobStore:
    return JobStore(redis_db, ttl=120, queued_grace=300, wake_batch=woken.append)


@pytest.fixture
def batches(redis_db: redis.Redis) -> BatchStore:
    return BatchStore(redis_db, ttl=120, message=lambda b: ("test-batch-queue", f"run {b}"))


def _batch(batches: BatchStore, *, window: int = 4, total: int = 10) -> BatchRecord:
    fields: BatchFields = {
        "api": "openai",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-x",
        "completion_window": "24h",
        "created_at": time.time(),
        "expires_at": time.time() + 86400,
        "priority": "batch",
        "window": window,
    }
    record = batches.create(tenant="t", fields=fields)
    assert batches.move(
        record.id, allowed=("validating",), status="in_progress", fields={"total": total}
    )
    return record


def _admit(jobs: JobStore, batch: BatchRecord, line: int) -> str:
    return bare_job(
        jobs, tenant="t", batch=BatchLine(batch.id, line, f"c{line}", next_cursor=100 * line)
    ).id


def test_a_new_batch_is_validating_with_its_task_queued(
    batches: BatchStore, redis_db: redis.Redis
) -> None:
    record = _batch(batches)
    assert redis_db.lrange("test-batch-queue", 0, -1) == [f"run {record.id}".encode()]
    loaded = batches.get(record.id, tenant="t")
    assert loaded.status == "in_progress" and loaded.count("line") == 1
    with pytest.raises(Exception, match="no batch"):
        batches.get(record.id, tenant="someone-else")


def test_admission_moves_the_batch_past_the_line_once(jobs: JobStore, batches: BatchStore) -> None:
    batch = _batch(batches)
    first = _admit(jobs, batch, 1)
    with pytest.raises(StaleLine):
        _admit(jobs, batch, 1)  # a stale holder admitting the same line again
    loaded = batches.get(batch.id, tenant="t")
    assert (loaded.count("line"), loaded.count("cursor")) == (2, 100)
    assert (loaded.count("admitted"), loaded.count("in_flight")) == (1, 1)
    assert batches.line_jobs(batch.id, 0, 10) == [first]
    assert batches.open_jobs(batch.id) == [first]
    job = jobs.get(first, tenant="t")
    assert (job.fields["batch_id"], job.fields["custom_id"], job.fields["line"]) == (
        batch.id,
        "c1",
        1,
    )


def test_a_lines_finish_is_counted_once_on_its_batch(
    jobs: JobStore, batches: BatchStore, woken: list[str]
) -> None:
    batch = _batch(batches, window=4)
    ids = [_admit(jobs, batch, n) for n in range(1, 5)]
    usage = {"prompt_tokens": 10, "completion_tokens": 3}
    assert jobs.succeed(
        ids[0],
        {
            "content": "a",
            "reasoning_content": None,
            "finish_reason": "stop",
            "usage": usage,
            "response": {},
        },
    )
    assert not jobs.succeed(
        ids[0],
        {
            "content": "a",
            "reasoning_content": None,
            "finish_reason": "stop",
            "usage": usage,
            "response": {},
        },
    )
    assert woken == []  # 3 of a window of 4 still running: no room worth a wake-up yet
    assert jobs.fail(ids[1], InvalidImage("bad"))
    assert woken == [batch.id]  # half the window free
    assert jobs.end_line(ids[2], Canceled("stop"))
    assert jobs.end_line(ids[3], BatchExpired("late"))
    loaded = batches.get(batch.id, tenant="t")
    counts = {
        n: loaded.count(n) for n in ("completed", "failed", "canceled", "expired", "in_flight")
    }
    assert counts == {"completed": 1, "failed": 1, "canceled": 1, "expired": 1, "in_flight": 0}
    assert (loaded.count("prompt_tokens"), loaded.count("completion_tokens")) == (10, 3)
    assert batches.open_jobs(batch.id) == []
    # The flag stays until the batch's holder takes the lock: one wake-up, not four.
    assert woken == [batch.id]


def test_a_wake_up_that_found_the_lock_held_is_kept_for_its_holder(
    jobs: JobStore, batches: BatchStore, woken: list[str]
) -> None:
    batch = _batch(batches, window=2)
    assert batches.lock(batch.id, "holder")
    assert not batches.lock(batch.id, "another")
    job = _admit(jobs, batch, 1)
    assert jobs.fail(job, InvalidImage("bad"))
    assert woken == [batch.id]  # its task finds the lock held and returns at once
    assert batches.unlock(batch.id, "holder")  # so the holder goes round once more
    assert not batches.unlock(batch.id, "holder")  # and then lets go
    assert batches.lock(batch.id, "another")


def test_the_sweeper_claims_only_batches_nobody_advances(
    batches: BatchStore, redis_db: redis.Redis
) -> None:
    held, idle = _batch(batches), _batch(batches)
    assert batches.lock(held.id, "holder")
    later = time.time() + 3600
    assert sorted(batches.claim_due(now=later)) == [idle.id]
    assert redis_db.zscore(keys.BATCHES_DUE, idle.id) == pytest.approx(later + 30)


def test_an_ended_batch_no_longer_counts_its_lines(
    jobs: JobStore, batches: BatchStore, redis_db: redis.Redis
) -> None:
    batch = _batch(batches)
    job = _admit(jobs, batch, 1)
    assert batches.finish(
        batch.id, allowed=("in_progress",), status="cancelled", fields={"completed": 0}
    )
    assert jobs.fail(job, InvalidImage("bad"))
    loaded = batches.get(batch.id, tenant="t")
    assert loaded.status == "cancelled" and loaded.count("failed") == 0
    assert redis_db.zscore(keys.BATCHES_DUE, batch.id) is None
    assert 0 < redis_db.ttl(keys.batch(batch.id)) <= 120


def test_a_batch_lines_job_keeps_its_lane_through_the_sweep(
    jobs: JobStore, batches: BatchStore, redis_db: redis.Redis
) -> None:
    batch = _batch(batches)
    job = _admit(jobs, batch, 1)
    assert jobs.get(job, tenant="t").fields["lane"] == "batch"
    later = Leases(redis_db, lease=5, clock=lambda: time.time() + 1000)
    [expired] = later.expired(queued_grace=300)
    assert (expired.job_id, expired.stage, expired.lane) == (job, "prepare", "batch")
