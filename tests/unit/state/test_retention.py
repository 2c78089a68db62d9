"""Removing what expired and deleted jobs leave behind, with a real Redis and both image
stores (files, and S3 on a real moto server process)."""

from __future__ import annotations

import io
import threading
import time

import redis
from PIL import Image

from tests.support import bare_job
from tests.support.s3server import Backend
from visionq import retention
from visionq.broker.celery_redis import CeleryRedis
from visionq.errors import InvalidImage
from visionq.intake import Intake
from visionq.models import JobRequest
from visionq.settings import Settings
from visionq.state import keys
from visionq.state.files import FileStore
from visionq.state.jobs import JobStore
from visionq.state.records import JobRecord


def _job(jobs: JobStore, backend: Backend, image: bytes, *, body: bool = True) -> JobRecord:
    """A job with one stored image and, as after its prepare, a body."""
    sha = backend.store.put_image([image], max_bytes=len(image)).sha256
    record = bare_job(jobs, images=[{"index": 0, "source": "upload", "blob": sha}])
    if body:
        backend.store.write_body(record.id, lambda out: out.write(b'{"model":"m"}'))
    return record


def _wait_until_expired(jobs: JobStore, *job_ids: str) -> None:
    deadline = time.monotonic() + 30
    while any(jobs.load(job_id) is not None for job_id in job_ids):
        assert time.monotonic() < deadline, "Redis never expired the jobs"
        time.sleep(0.1)


def test_an_expired_job_loses_its_images_and_body(redis_db: redis.Redis, backend: Backend) -> None:
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    record = _job(jobs, backend, b"expiring image")
    assert retention.remove_expired(jobs, backend.store, now=time.time()) == []  # not yet
    assert len(backend.stored()) == 2
    _wait_until_expired(jobs, record.id)
    assert retention.remove_expired(jobs, backend.store, now=time.time()) == [record.id]
    assert backend.stored() == []
    assert retention.remove_expired(jobs, backend.store, now=time.time()) == []
    _assert_nothing_kept(redis_db)


def test_a_finished_job_is_kept_for_the_result_ttl_from_its_finish(
    redis_db: redis.Redis, backend: Backend
) -> None:
    record = _job(JobStore(redis_db, ttl=3600, queued_grace=300), backend, b"finished image")
    short = JobStore(redis_db, ttl=1, queued_grace=300)
    assert short.fail(record.id, InvalidImage("bad"))  # the finish sets the result TTL
    _wait_until_expired(short, record.id)
    assert retention.remove_expired(short, backend.store, now=time.time()) == [record.id]
    assert backend.stored() == []


def test_a_sweeper_whose_clock_runs_ahead_removes_nothing_alive(
    redis_db: redis.Redis, backend: Backend
) -> None:
    jobs = JobStore(redis_db, ttl=60, queued_grace=300)
    _job(jobs, backend, b"a live job's image")
    stored = backend.stored()
    assert retention.remove_expired(jobs, backend.store, now=time.time() + 3600) == []
    assert backend.stored() == stored


def test_an_image_shared_with_a_live_job_stays(redis_db: redis.Redis, backend: Backend) -> None:
    shared, own = b"shared image", b"image of the expiring job only"
    short = JobStore(redis_db, ttl=1, queued_grace=300)
    long = JobStore(redis_db, ttl=3600, queued_grace=300)
    expiring = short.create(
        tenant="t",
        model="mimo-v2.5",
        api="openai",
        request={"messages": []},
        images=[
            {"index": 0, "source": "upload", "blob": _sha(backend, shared)},
            {"index": 1, "source": "upload", "blob": _sha(backend, own)},
        ],
        webhook_url=None,
        metadata=None,
    )
    live = _job(long, backend, shared, body=False)
    _wait_until_expired(short, expiring.id)
    assert retention.remove_expired(short, backend.store, now=time.time()) == [expiring.id]
    shared_sha = live.images[0]["blob"]
    assert backend.stored() == [f"images/{shared_sha[:2]}/{shared_sha}"]
    # The live job's delete then takes the image: nobody else uses it any more.
    retention.delete_job(long, backend.store, live.id, tenant="t")
    assert backend.stored() == []


def _assert_nothing_kept(client: redis.Redis) -> None:
    """No reference, lock, or index entry is left (the tenant's list and the lease index
    drop a gone job themselves when they next meet it)."""
    left = {key.decode() for key in client.keys("*")}
    assert left <= {keys.tenant_jobs("t"), keys.LEASES}


def _sha(backend: Backend, data: bytes) -> str:
    return backend.store.put_image([data], max_bytes=len(data)).sha256


def test_a_deleted_job_goes_at_once_and_is_not_swept_again(
    redis_db: redis.Redis, backend: Backend
) -> None:
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    record = _job(jobs, backend, b"deleted image")
    kept = _job(JobStore(redis_db, ttl=3600, queued_grace=300), backend, b"another image")
    retention.delete_job(jobs, backend.store, record.id, tenant="t")
    assert jobs.load(record.id) is None
    sha = kept.images[0]["blob"]
    assert backend.stored() == [f"bodies/{kept.id}", f"images/{sha[:2]}/{sha}"]
    # Past the deleted job's TTL: nothing of it is left to sweep.
    assert retention.remove_expired(jobs, backend.store, now=time.time() + 1.1) == []


def test_concurrent_sweeps_remove_each_job_once(redis_db: redis.Redis, backend: Backend) -> None:
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    records = [_job(jobs, backend, f"image {n}".encode()) for n in range(30)]
    shared = [_job(jobs, backend, b"one image for many jobs") for _ in range(5)]
    _wait_until_expired(jobs, *(r.id for r in records + shared))
    removed: list[list[str]] = []

    def sweep() -> None:
        # A small batch, so that the sweepers run through the jobs side by side.
        while batch := retention.remove_expired(jobs, backend.store, now=time.time(), limit=4):
            removed.append(batch)

    sweepers = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in sweepers:
        thread.start()
    for thread in sweepers:
        thread.join()
    ids = [job_id for batch in removed for job_id in batch]
    assert sorted(ids) == sorted(r.id for r in records + shared)  # each one, once
    assert backend.stored() == []
    _assert_nothing_kept(redis_db)


def test_an_intake_reusing_an_image_being_removed_keeps_it(
    redis_db: redis.Redis, backend: Backend
) -> None:
    """The sweep's claim locks the image; an intake storing the same bytes meanwhile
    waits for the lock and puts the file back once the sweep has removed it."""
    png = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(png, "PNG")
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    old = _job(jobs, backend, png.getvalue(), body=False)
    sha = old.images[0]["blob"]
    _wait_until_expired(jobs, old.id)
    [(job_id, orphans)] = jobs.blobs.claim_expired(now=time.time(), limit=10)
    assert (job_id, orphans) == (old.id, [sha])

    long = JobStore(redis_db, ttl=3600, queued_grace=300)
    intake = Intake(
        Settings(storage_url="file:///unused"),
        backend.store,
        long,
        CeleryRedis(redis_db),
        FileStore(redis_db, ttl=3600),
    )
    submitted: list[JobRecord] = []
    request = JobRequest(prompt="what is it?")
    upload = io.BytesIO(png.getvalue())
    thread = threading.Thread(
        target=lambda: submitted.append(intake.submit(request, tenant="t2", uploads=[upload]))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not long.list_jobs(tenant="t2", status=None, limit=1, after=None)[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The new job is recorded and its intake waits on the lock: the sweep goes on.
    backend.store.delete_image(sha)
    long.blobs.release(sha, holder=old.id)
    jobs.blobs.forget_expired([old.id])
    thread.join()
    assert submitted[0].images[0]["blob"] == sha
    assert backend.store.has_image(sha)
    # And the image is the new job's: its delete takes it, as the only user.
    retention.delete_job(long, backend.store, submitted[0].id, tenant="t2")
    assert not backend.store.has_image(sha)


def test_an_image_taken_up_after_the_claim_is_kept_and_a_stale_lock_is_not_released(
    redis_db: redis.Redis, backend: Backend
) -> None:
    """Found in review: images are locked for a whole batch at once, and removing many
    takes a while. Just before each file goes, the remover checks that the lock is still
    its own and that no job has taken the image up since; it never releases a lock that
    ran out and was taken by another remover."""
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    old = _job(jobs, backend, b"an image claimed, then used again", body=False)
    sha = old.images[0]["blob"]
    _wait_until_expired(jobs, old.id)
    [(job_id, orphans)] = jobs.blobs.claim_expired(now=time.time(), limit=10)
    assert (job_id, orphans) == (old.id, [sha])
    # Before the remover gets to it, a new job records that it uses the same image.
    new = bare_job(JobStore(redis_db, ttl=3600, queued_grace=300), images=old.images)
    assert not jobs.blobs.confirm_orphan(sha, holder=old.id)  # the remover leaves the file
    assert not jobs.blobs.being_deleted(sha)  # and lets its lock go
    assert retention.remove_expired(jobs, backend.store, now=time.time() + 60) == [old.id]
    assert backend.store.has_image(sha)  # kept for the new job

    redis_db.set(keys.blob_lock(sha), "another-remover")
    jobs.blobs.release(sha, holder=old.id)
    assert jobs.blobs.being_deleted(sha)  # not ours: still held
    assert not jobs.blobs.confirm_orphan(sha, holder=old.id)
    assert new.images[0]["blob"] == sha


def test_catching_up_removes_a_backlog_longer_than_one_batch(
    redis_db: redis.Redis, backend: Backend
) -> None:
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    records = [
        _job(jobs, backend, b"one image for many jobs", body=False)
        for _ in range(2 * retention.EXPIRED_PER_CALL + 10)
    ]
    _wait_until_expired(jobs, *(r.id for r in records))
    assert retention.catch_up(jobs, backend.store, budget=60) == len(records)
    assert backend.stored() == []
    _assert_nothing_kept(redis_db)


def test_catching_up_stops_at_its_budget(redis_db: redis.Redis, backend: Backend) -> None:
    jobs = JobStore(redis_db, ttl=1, queued_grace=300)
    records = [
        _job(jobs, backend, b"one image for many jobs", body=False)
        for _ in range(2 * retention.EXPIRED_PER_CALL + 10)
    ]
    _wait_until_expired(jobs, *(r.id for r in records))
    # A clock past the budget after the first call: one batch, the rest left for later.
    ticks = iter([0.0, 10.0])
    removed = retention.catch_up(jobs, backend.store, budget=1, clock=lambda: next(ticks))
    assert removed == retention.EXPIRED_PER_CALL
    assert retention.catch_up(jobs, backend.store, budget=60) == len(records) - removed
