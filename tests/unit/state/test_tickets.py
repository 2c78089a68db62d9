"""Upstream tickets on a real Redis: a waiting ticket is visible while its process lives,
and one whose process was SIGKILLed is reported lost once, so the sweeper replaces it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import redis

from tests.unit.state.clock import Clock
from tests.unit.state.test_pacing import MODEL, _pacer, _ready
from visionq.state import keys
from visionq.state.pacing import Pacer, TicketAudit, Tickets

BROKER_LIST = "upstream"

# A worker process whose one ticket waits for the only slot, its keeper renewing.
_WAITING_WORKER = """
import sys, redis
from visionq.state.leases import LeaseKeeper, Leases
from visionq.state.pacing import Pacer
from visionq.settings import Settings
from visionq.accounts import Accounts
client = redis.Redis.from_url(sys.argv[1])
settings = Settings(upstream_concurrency={"*": 1})
accounts = Accounts.from_settings(settings)
pacer = Pacer(client, settings, accounts, Leases(client, lease=0.5), LeaseKeeper(interval=0.1))
with pacer.turn(sys.argv[2]):
    pass
"""


def _count(pacer: Pacer, queued: int = 0) -> Tickets:
    (count,) = pacer.tickets(queued=queued)
    return count


def _until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_waiting_ticket_is_live_until_it_takes_a_job(
    redis_db: redis.Redis, redis_url: str
) -> None:
    pacer = _pacer(redis_db, concurrency=1)
    first, second = _ready(redis_db, pacer, "a"), _ready(redis_db, pacer, "b")
    turn = pacer.turn(MODEL)
    assert turn.__enter__().job_id == first  # took its job: no longer a waiting ticket
    assert _count(pacer) == Tickets(MODEL, due=1, live=0, lost=0, queued=0)
    worker = subprocess.Popen([sys.executable, "-c", _WAITING_WORKER, redis_url, MODEL])
    try:
        _until(lambda: _count(pacer).live == 1)
        time.sleep(1.5)  # three of its leases: only its keeper's renewals keep it live
        assert _count(pacer) == Tickets(MODEL, due=1, live=1, lost=0, queued=0)
        turn.__exit__(None, None, None)  # the slot is free: the waiting ticket takes `second`
        assert worker.wait(10) == 0
    finally:
        worker.kill()
        worker.wait()
    assert redis_db.hget(keys.job(second), "attempts") == b"1"
    assert pacer.tickets(queued=0) == []  # no job waits: nothing to count


def test_the_ticket_of_a_killed_worker_is_reported_lost_once(
    redis_db: redis.Redis, redis_url: str
) -> None:
    clock = Clock()
    pacer = _pacer(redis_db, clock=clock, concurrency=1)
    _ready(redis_db, pacer, "a")
    _ready(redis_db, pacer, "b")
    turn = pacer.turn(MODEL)
    turn.__enter__()  # holds the only slot, so the worker's ticket waits for it
    worker = subprocess.Popen([sys.executable, "-c", _WAITING_WORKER, redis_url, MODEL])
    try:
        _until(lambda: _count(pacer).live == 1)
        audit = TicketAudit(hold=60)
        assert audit.missing([_count(pacer)]) == {}
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        clock.advance(0.6)  # past its registration's lease
        assert audit.missing([_count(pacer)]) == {MODEL: 1}  # at once, not after a grace
        assert _count(pacer) == Tickets(MODEL, due=1, live=0, lost=0, queued=0)
    finally:
        worker.kill()
        worker.wait()
        turn.__exit__(None, None, None)


def test_due_jobs_beyond_every_ticket_get_tickets_once_the_shortfall_lasts() -> None:
    clock = Clock()
    audit = TicketAudit(hold=0.3, clock=clock)
    # Due jobs whose tickets are nowhere (lost before they registered), one live ticket.
    short = [Tickets(MODEL, due=4, live=1, lost=0, queued=1)]
    enough = [Tickets(MODEL, due=4, live=1, lost=0, queued=3)]
    assert audit.missing(short) == {}  # could be tickets on their way
    clock.advance(0.35)
    assert audit.missing(enough) == {}  # they were: counted afresh
    assert audit.missing(short) == {}
    clock.advance(0.2)
    assert audit.missing([Tickets(MODEL, due=4, live=1, lost=0, queued=2)]) == {}
    clock.advance(0.15)
    assert audit.missing(short) == {MODEL: 1}  # short a hold long: the fewest missing meanwhile
    assert audit.missing(short) == {}  # sent: not again before another hold


def test_tickets_count_only_due_jobs_and_the_broker_list(redis_db: redis.Redis) -> None:
    clock = Clock()
    pacer = _pacer(redis_db, clock=clock)
    _ready(redis_db, pacer, "a")
    _ready(redis_db, pacer, "b", due=clock() + 60)  # a retry's countdown: not due yet
    redis_db.lpush(BROKER_LIST, "a ticket")
    assert _count(pacer, redis_db.llen(BROKER_LIST)) == Tickets(
        MODEL, due=1, live=0, lost=0, queued=1
    )
    audit = TicketAudit(hold=0.3, clock=clock)
    for _ in range(4):  # a ticket for every due job: nothing to send, round after round
        assert audit.missing([_count(pacer, redis_db.llen(BROKER_LIST))]) == {}
        clock.advance(0.1)
    redis_db.delete(BROKER_LIST)  # that ticket was lost
    assert audit.missing([_count(pacer, redis_db.llen(BROKER_LIST))]) == {}
    clock.advance(0.35)
    assert audit.missing([_count(pacer, redis_db.llen(BROKER_LIST))]) == {MODEL: 1}
