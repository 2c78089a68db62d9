"""The sweeper's claim on prepare messages a consumer took and never acknowledged, with a
real kombu consumer on real Redis."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.support import bare_job
from visionq.broker import PREPARE_QUEUE, PREPARE_TASK, UPSTREAM_QUEUE, UPSTREAM_TASK
from visionq.broker.celery_redis import CeleryRedis
from visionq.settings import Settings
from visionq.state.jobs import JobStore
from visionq.state.keys import job as job_key
from visionq.state.leases import Leases
from workers.app import create_celery


def test_a_stranded_prepare_is_claimed_once_and_never_restored(
    redis_url: str, redis_db: redis.Redis, tmp_path: Path
) -> None:
    app = create_celery(Settings(redis_url=redis_url, storage_url=f"file://{tmp_path}"))
    broker = CeleryRedis(redis_db)
    job = bare_job(JobStore(redis_db, ttl=600, queued_grace=300))
    app.send_task(PREPARE_TASK, args=[job.id], queue=PREPARE_QUEUE)
    app.send_task(UPSTREAM_TASK, args=["mimo-v2.5"], queue=UPSTREAM_QUEUE)

    with app.connection_for_read() as connection:
        prepare = connection.SimpleQueue(PREPARE_QUEUE)
        upstream = connection.SimpleQueue(UPSTREAM_QUEUE)
        # Taken and never acknowledged, like a worker that died (or lost Redis) holding them.
        assert prepare.get(timeout=5).headers["task"] == PREPARE_TASK
        assert upstream.get(timeout=5).headers["task"] == UPSTREAM_TASK
        assert redis_db.hlen("unacked") == 2

        assert broker.claim_stranded(PREPARE_QUEUE, older_than=60) == []  # not stale yet
        assert broker.claim_stranded(PREPARE_QUEUE, older_than=0) == [job.id]
        assert broker.claim_stranded(PREPARE_QUEUE, older_than=0) == []  # claimed once
        assert redis_db.hlen("unacked") == 1  # the ticket is not ours to take
        prepare.close()
        upstream.close()
    # Closing the consumer gives back what it still holds: the ticket, not the claimed one.
    assert redis_db.llen(PREPARE_QUEUE) == 0
    assert redis_db.llen(UPSTREAM_QUEUE) == 1
    # The sweeper re-sends only for a job still queued, and looks again a lease later.
    leases = Leases(redis_db, lease=3)
    assert leases.received(job.id) is True
    redis_db.hset(job_key(job.id), "status", "succeeded")
    assert leases.received(job.id) is False
