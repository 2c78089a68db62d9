"""Leases on a real Redis: who may work on a job, and what the sweeper brings back."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tests.support import bare_job
from tests.unit.state.clock import Clock
from visionq import responses
from visionq.errors import InvalidImage
from visionq.state import keys
from visionq.state.jobs import JobStore
from visionq.state.leases import Expired, LeaseKeeper, Leases
from visionq.state.records import JobRecord


def _job(
    redis_db: redis.Redis, grace: float = 600, clock: Callable[[], float] = time.time
) -> tuple[JobStore, JobRecord]:
    jobs = JobStore(redis_db, ttl=600, queued_grace=grace, clock=clock)
    record = bare_job(jobs)
    return jobs, record


def test_a_live_lease_keeps_others_out_and_an_expired_one_lets_them_in(redis_db) -> None:
    _, record = _job(redis_db)
    clock = Clock()
    short = Leases(redis_db, lease=0.2, clock=clock)
    assert short.take(record.id, "prepare").attempt == 1
    assert short.take(record.id, "prepare") is None  # a duplicate message: dropped
    clock.advance(0.25)
    assert short.take(record.id, "prepare").attempt == 2  # the holder died: taken over, counted


def test_upstream_needs_a_prepared_job_handed_on(redis_db) -> None:
    jobs, record = _job(redis_db)
    leases = Leases(redis_db, lease=30)
    leases.take(record.id, "prepare")
    assert leases.take(record.id, "upstream") is None  # not prepared yet
    assert jobs.save_images(record.id, [], input_tokens=0)
    assert leases.take(record.id, "upstream") is None  # prepare still holds it
    leases.release(record.id, look_in=30)
    assert leases.take(record.id, "upstream").attempt == 1
    assert responses.job_object(jobs.get(record.id, tenant="t"))["attempts"] == 1


def test_a_late_renewal_does_not_take_back_a_handed_on_job(redis_db) -> None:
    jobs, record = _job(redis_db)
    leases = Leases(redis_db, lease=30)
    leases.take(record.id, "prepare")
    jobs.save_images(record.id, [], input_tokens=0)
    leases.release(record.id, look_in=30)
    leases.renew(record.id)  # the keeper thread, a moment too late
    assert leases.take(record.id, "upstream").attempt == 1


def test_the_keeper_renews_while_held(redis_db) -> None:
    _, record = _job(redis_db)
    leases = Leases(redis_db, lease=0.3)
    keeper = LeaseKeeper(interval=0.1)
    leases.take(record.id, "prepare")
    keeper.hold(record.id, lambda: leases.renew(record.id))
    time.sleep(0.8)  # well past one lease: only renewals keep it
    assert leases.take(record.id, "prepare") is None
    keeper.drop(record.id)
    time.sleep(0.4)
    assert leases.take(record.id, "prepare").attempt == 2


def test_expired_names_the_stage_to_queue_again(redis_db) -> None:
    clock = Clock()
    leases = Leases(redis_db, lease=0.1, clock=clock)
    jobs, lost_message = _job(redis_db, grace=0, clock=clock)  # queued, its message lost
    _, dead_preparer = _job(redis_db, grace=0, clock=clock)
    leases.take(dead_preparer.id, "prepare")
    _, dead_caller = _job(redis_db, grace=0, clock=clock)
    leases.take(dead_caller.id, "prepare")
    jobs.save_images(dead_caller.id, [], input_tokens=0)  # prepared; its upstream worker then died
    _, alive = _job(redis_db, grace=0, clock=clock)
    Leases(redis_db, lease=60, clock=clock).take(alive.id, "prepare")
    _, finished = _job(redis_db, grace=0, clock=clock)
    jobs.fail(finished.id, InvalidImage("x"))
    clock.advance(0.15)
    found = {e.job_id: e.stage for e in leases.expired(queued_grace=60)}
    assert found == {
        lost_message.id: "prepare",
        dead_preparer.id: "prepare",
        dead_caller.id: "upstream",
    }
    assert leases.expired(queued_grace=60) == []  # claimed: not again until a lease later


def test_a_job_waiting_its_turn_in_the_pacer_is_not_queued_again(redis_db) -> None:
    leases = Leases(redis_db, lease=0.1)
    jobs, waiting = _job(redis_db, grace=0)
    leases.take(waiting.id, "prepare")
    jobs.save_images(waiting.id, [], input_tokens=0)
    leases.release(waiting.id, look_in=0)
    redis_db.zadd(keys.pace_queue("mimo-v2.5", "t"), {waiting.id: 0})
    assert leases.expired(queued_grace=60) == []
    redis_db.delete(keys.pace_queue("mimo-v2.5", "t"))  # taken, and its worker died
    redis_db.zadd(keys.LEASES, {waiting.id: 0})
    assert leases.expired(queued_grace=60) == [Expired(waiting.id, "upstream", "mimo-v2.5", "t")]


def test_the_taker_gets_the_record_as_taken_with_no_second_read(redis_db) -> None:
    jobs, record = _job(redis_db)
    taken = Leases(redis_db, lease=30).take(record.id, "prepare")
    assert taken is not None
    assert taken.record.status == "running"
    assert taken.record == jobs.load(record.id)
