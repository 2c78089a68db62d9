"""Our own lease on unfinished jobs, so none stays `queued` or `running` forever.

The broker cannot do this for us: it re-delivers an unacknowledged message only after its
visibility timeout, which must outlast the longest task (minutes of upstream reading), so
a SIGKILLed worker's job would wait an hour. Instead:

- a job's hash holds `lease_until`: while a worker works on it, that worker's keeper
  thread pushes it forward every few seconds; a stage that hands the job on (prepare to
  upstream, a retry's countdown) sets it to 0, so whoever comes next may take it;
- the sorted set `keys.LEASES` says when the sweeper should next look at each unfinished
  job. The sweeper re-queues the job's current stage when its lease has run out, and
  nothing else: a message that arrives while a live worker holds the job is dropped;
- a queued job is looked at after a grace (its message may simply wait in a long queue),
  or one lease after a worker received its message (that worker may die before starting
  it, and the broker would hand the message back only after its visibility timeout);
- finishing a job removes it from the set (in `jobs/transition`).

This module owns the lease index (`keys.LEASES`) and the lease fields of a job's hash
(`lease_until`, `received_until`, `prepare_attempts` and `attempts`); each of its scripts
writes only those, but for one step: `leases/take` also moves a queued job to `running`
(the record's field, `jobs`'), so that starting a job and holding it are one step. The
lease index is also written where a job's life begins and ends, in the same step as the
job: `jobs/create` (its first look), `jobs/transition` (a finish) and `blobs/delete_job`.
The sweep reads the pacer's queues (`pacing`) to leave a job waiting its turn alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from visionq.state import keys
from visionq.state.records import JobRecord, record_from_hash
from visionq.state.redis import redis_errors, script

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taken:
    """A job held for a stage: which attempt of that stage this is, and the record."""

    attempt: int
    record: JobRecord


@dataclass(frozen=True)
class Expired:
    job_id: str
    stage: str  # "prepare" or "upstream": which task to queue again
    model: str
    tenant: str
    #: The pacer's lane it waits in once prepared ("interactive" or "batch").
    lane: str = "interactive"


class Leases:
    """Takes, renews and hands on leases, and finds the expired. `clock` gives Unix time
    now, for every lease end and every look of the sweep (tests move it ahead)."""

    def __init__(
        self, client: redis.Redis, *, lease: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self.lease = lease
        self._clock = clock
        self._take = script(client, "leases/take")
        self._sweep = script(client, "leases/sweep")
        self._renew = script(client, "leases/renew")
        self._received = script(client, "leases/received")
        self._release = script(client, "leases/release")

    def take(self, job_id: str, stage: str) -> Taken | None:
        """Hold the job for `stage`: the stage's attempt number and the record as taken, or
        None: leave it alone."""
        now = self._clock()
        with redis_errors():
            reply = self._take(
                keys=[keys.job(job_id), keys.LEASES], args=[now, now + self.lease, job_id, stage]
            )
        if reply is None:
            return None
        attempt, flat = reply
        record = record_from_hash(job_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        assert record is not None  # the script took it, so it exists
        return Taken(int(attempt), record)

    def received(self, job_id: str) -> bool:
        """A worker's main process took the job's message from the broker; False when the
        job is no longer queued (a worker started it, or it finished)."""
        with redis_errors():
            return bool(
                self._received(
                    keys=[keys.job(job_id), keys.LEASES], args=[self._clock() + self.lease, job_id]
                )
            )

    def renew(self, job_id: str) -> None:
        with redis_errors():
            self._renew(
                keys=[keys.job(job_id), keys.LEASES], args=[self._clock() + self.lease, job_id]
            )

    def release(self, job_id: str, *, look_in: float, uncount: str | None = None) -> None:
        """Hand the job on: anyone may take it now; the sweeper looks `look_in` s from now.

        `uncount` ("prepare" or "upstream") gives back the attempt this holder took: it
        ended through no fault of the job (storage was down, an upstream account was out
        of rotation), so it must not count towards failing it.
        """
        counter = {None: "", "prepare": "prepare_attempts", "upstream": "attempts"}[uncount]
        with redis_errors():
            self._release(
                keys=[keys.job(job_id), keys.LEASES],
                args=[self._clock() + look_in, job_id, counter],
            )

    def expired(self, *, queued_grace: float, limit: int = 200) -> list[Expired]:
        with redis_errors():
            flat = self._sweep(
                keys=[keys.LEASES],
                args=[
                    self._clock(),
                    self.lease,
                    limit,
                    queued_grace,
                    keys.JOB_PREFIX,
                    keys.PACE_PREFIX,
                    keys.PACE_QUEUE,
                    keys.PACE_BATCH_QUEUE,
                ],
            )
        values = [v.decode() for v in flat]
        return [Expired(*values[i : i + 5]) for i in range(0, len(values), 5)]


class LeaseKeeper:
    """Renews, from one thread, every lease this process holds: jobs' and pacing slots'."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._held: dict[str, Callable[[], object]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, key: str, renew: Callable[[], object]) -> None:
        with self._lock:
            self._held[key] = renew
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew_forever, daemon=True, name="vq-leases"
                )
                self._thread.start()

    def drop(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                held = list(self._held.items())
            for key, renew in held:
                try:
                    renew()
                except Exception:  # a Redis blip must not end the renewals
                    log.warning("could not renew the lease of %s", key, exc_info=True)
