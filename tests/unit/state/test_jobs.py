"""The job record on a real Redis: transitions only move forward, and only once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.support import bare_job
from visionq import responses
from visionq.dev.ports import free_port
from visionq.dev.redisserver import RedisServer
from visionq.errors import InvalidImage, NotFound, Unavailable
from visionq.ops.durability import durability_warnings
from visionq.state import keys
from visionq.state.jobs import MAX_LIST_SCAN, JobStore
from visionq.state.leases import Leases
from visionq.state.records import JobRecord


@pytest.fixture
def store(redis_db: redis.Redis) -> JobStore:
    return JobStore(redis_db, ttl=120, queued_grace=300)


def _result(content: str) -> dict[str, object]:
    """A result in the shape the upstream step stores (models.Result)."""
    return {"content": content, "usage": {}, "response": {}}


def _new(store: JobStore, tenant: str = "t1") -> JobRecord:
    return bare_job(
        store,
        tenant=tenant,
        images=[{"index": 0, "source": "upload", "blob": "ab" * 32}],
        metadata={"k": "v"},
    )


def test_public_job_hides_internal_fields(store: JobStore) -> None:
    job = responses.job_object(store.get(_new(store).id, tenant="t1"))
    assert job["status"] == "queued"
    assert job["images"] == [
        {
            "index": 0,
            "source": "upload",
            "format": None,
            "width": None,
            "height": None,
            "bytes": None,
            "sha256": None,
            "image_tokens": None,
        }
    ]
    assert "request" not in job and "tenant" not in job
    assert job["metadata"] == {"k": "v"}


def test_other_tenant_is_not_found(store: JobStore) -> None:
    record = _new(store)
    with pytest.raises(NotFound) as other:
        store.get(record.id, tenant="t2")
    with pytest.raises(NotFound) as missing:
        store.get("job_" + "0" * 24, tenant="t2")
    assert other.value.status == missing.value.status == 404


def test_transitions_only_forward_and_once(store: JobStore) -> None:
    record = _new(store)
    leases = Leases(store._redis, lease=30)
    assert leases.take(record.id, "prepare").attempt == 1
    assert store.get(record.id, tenant="t1").status == "running"
    assert store.succeed(record.id, _result("first"))
    assert not store.succeed(record.id, _result("second"))
    assert not store.fail(record.id, InvalidImage("late"))
    assert leases.take(record.id, "prepare") is None
    job = responses.job_object(store.get(record.id, tenant="t1"))
    assert job["status"] == "succeeded"
    assert job["result"] == _result("first")
    assert job["error"] is None


def test_concurrent_finishes_record_exactly_one(store: JobStore) -> None:
    record = _new(store)
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def finish(n: int) -> None:
        barrier.wait()
        outcomes.append(store.succeed(record.id, _result(str(n))))

    threads = [threading.Thread(target=finish, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 1


def test_wait_returns_when_the_job_finishes(store: JobStore) -> None:
    record = _new(store)
    threading.Timer(0.3, store.succeed, args=(record.id, _result("done"))).start()
    started = time.monotonic()
    waited = store.wait(record.id, tenant="t1", timeout=10)
    elapsed = time.monotonic() - started
    assert waited.status == "succeeded"
    assert 0.2 <= elapsed < 5  # it waited for the finish, and woke at it


def test_wait_times_out_on_an_unfinished_job(store: JobStore) -> None:
    record = _new(store)
    started = time.monotonic()
    assert store.wait(record.id, tenant="t1", timeout=0.3).status == "queued"
    assert time.monotonic() - started >= 0.25


def test_finished_job_gets_the_result_ttl(store: JobStore) -> None:
    record = _new(store)
    store.fail(record.id, InvalidImage("bad"))
    ttl = store._redis.ttl(keys.job(record.id))
    assert 0 < ttl <= 120


def test_redis_down_is_unavailable() -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    with pytest.raises(Unavailable):
        _new(JobStore(client, ttl=60, queued_grace=300))


def test_durability_warnings_name_eviction_and_no_persistence(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert durability_warnings(client) == []  # the test Redis: AOF on, noeviction
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("appendonly", "no")
        warnings = durability_warnings(client)
        assert any("noeviction" in w for w in warnings)
        assert any("nothing on disk" in w for w in warnings)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("appendonly", "yes")
        client.close()


def test_a_filtered_page_scans_a_bounded_number_of_jobs(store: JobStore) -> None:
    oldest = _new(store)
    store.fail(oldest.id, InvalidImage("the one failed job, oldest of all"))
    for _ in range(MAX_LIST_SCAN + 20):
        _new(store)
    page, cursor = store.list_jobs(tenant="t1", status="failed", limit=10, after=None)
    assert page == []  # a thousand looked at, none failed: an empty page, and more to see
    assert cursor is not None
    page, cursor = store.list_jobs(tenant="t1", status="failed", limit=10, after=cursor)
    assert [r.id for r in page] == [oldest.id]
    assert cursor is None


def test_pages_without_a_filter_are_full_and_end_with_no_cursor(store: JobStore) -> None:
    made = [_new(store).id for _ in range(5)]
    first, cursor = store.list_jobs(tenant="t1", status=None, limit=3, after=None)
    second, end = store.list_jobs(tenant="t1", status=None, limit=3, after=cursor)
    assert [r.id for r in first + second] == list(reversed(made))
    assert end is None


def test_a_job_past_its_deadline_is_canceled_only_while_nobody_works_on_it(
    redis_db: redis.Redis, store: JobStore
) -> None:
    leases = Leases(redis_db, lease=30)
    waiting = bare_job(store, deadline=time.time() + 0.2)
    worked_on = bare_job(store, deadline=time.time() + 0.2)
    finished = bare_job(store, deadline=time.time() + 0.2)
    later = bare_job(store, deadline=time.time() + 3600)
    assert leases.take(worked_on.id, "prepare").attempt == 1
    assert store.fail(finished.id, InvalidImage("bad"))
    assert store.cancel_overdue() == []  # none is due yet
    time.sleep(0.3)
    assert store.cancel_overdue() == [waiting.id]
    canceled = store.load(waiting.id)
    assert canceled is not None and canceled.status == "canceled"
    assert canceled.fields["error"]["type"] == "deadline_exceeded"
    # The one being worked on is its worker's to end; the finished one left the index.
    assert {m.decode() for m in redis_db.zrange(keys.DEADLINES, 0, -1)} == {worked_on.id, later.id}
    assert store.miss_deadline(worked_on.id)  # as its worker does
    assert store.load(worked_on.id).status == "canceled"  # type: ignore[union-attr]
    assert {m.decode() for m in redis_db.zrange(keys.DEADLINES, 0, -1)} == {later.id}
