"""Idempotency-Key records on a real Redis, including a crash right after the job is made."""

from __future__ import annotations

import pytest
import redis

from tests.support import bare_job
from visionq.errors import Conflict
from visionq.state.idempotency import IdempotencyKeys, IdempotencyRecord
from visionq.state.jobs import JobStore


def _create(jobs: JobStore, remember: IdempotencyRecord) -> str:
    return bare_job(jobs, remember=remember).id


def test_the_job_and_its_key_are_written_together(redis_db: redis.Redis) -> None:
    keys, jobs = IdempotencyKeys(redis_db), JobStore(redis_db, ttl=600, queued_grace=300)
    assert keys.reserve("t", "k1", "fp") is None
    job_id = _create(jobs, keys.remember("t", "k1", "fp"))
    # The request dies here, before answering: a retry still finds the job it made.
    assert keys.reserve("t", "k1", "fp") == job_id
    with pytest.raises(Conflict):
        keys.reserve("t", "k1", "another body")


def test_release_frees_only_its_own_reservation(redis_db: redis.Redis) -> None:
    keys, jobs = IdempotencyKeys(redis_db), JobStore(redis_db, ttl=600, queued_grace=300)
    assert keys.reserve("t", "k2", "fp") is None
    job_id = _create(jobs, keys.remember("t", "k2", "fp"))
    keys.release("t", "k2", "fp")  # a late failure must not free a key that names a job
    assert keys.reserve("t", "k2", "fp") == job_id
    assert keys.reserve("t", "k3", "fp") is None
    keys.release("t", "k3", "fp")
    assert keys.reserve("t", "k3", "fp") is None  # freed: a retry may make the job
