"""The tenants' indexes lose the ids of expired records (`prune_indexes`), oldest first, so
that an index holds no more than the records that still exist."""

from __future__ import annotations

import redis

from tests.support import bare_job
from visionq.state import keys
from visionq.state.jobs import JobStore
from visionq.state.pages import prune_indexes


def test_expired_jobs_leave_their_tenants_index(redis_db: redis.Redis) -> None:
    jobs = JobStore(redis_db, ttl=600, queued_grace=300)
    made = [bare_job(jobs, tenant=t).id for t in ("a", "a", "a", "b")]
    for job_id in made[:2] + made[3:]:
        redis_db.delete(keys.job(job_id))  # as its TTL would
    redis_db.zadd(keys.tenant_files("a"), {"file-gone": 0})  # files' indexes too
    assert prune_indexes(redis_db) == 4
    assert redis_db.zrange(keys.tenant_jobs("a"), 0, -1) == [made[2].encode()]
    assert redis_db.zcard(keys.tenant_jobs("b")) == 0
    assert redis_db.zcard(keys.tenant_files("a")) == 0
    assert prune_indexes(redis_db) == 0  # nothing more to drop
