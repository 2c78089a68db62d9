"""Our own lease on unfinished jobs, so none stays `queued` or `running` forever.

The broker cannot do this for us: it re-delivers an unacknowledged message only after its
visibility timeout, which must outlast the longest task (minutes of upstream reading), so
a SIGKILLed worker's job would wait an hour. Instead:

- a job's hash holds `lease_until`: while a worker works on it, that worker's keeper
  thread pushes it forward every few seconds; a stage that hands the job on (prepare to
  upstream, a retry's countdown) sets it to 0, so whoever comes next may take it;
- the sorted set `vq:leases` says when the sweeper should next look at each unfinished
  job. The sweeper re-queues the job's current stage when its lease has run out, and
  nothing else: a message that arrives while a live worker holds the job is dropped;
- a queued job is looked at after a grace (its message may simply wait in a long queue),
  or one lease after a worker received its message (that worker may die before starting
  it, and the broker would hand the message back only after its visibility timeout);
- finishing a job removes it from the set (in `jobs`' transition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from visionq.state.jobs import LEASES_KEY, PACE_PREFIX, job_key, redis_errors

log = logging.getLogger(__name__)

# KEYS[1] job, KEYS[2] leases; ARGV[1] now, ARGV[2] lease end, ARGV[3] id, ARGV[4] stage.
# Takes the job for a stage when nobody live holds it; returns the stage's attempt count.
_TAKE = """
local status = redis.call('HGET', KEYS[1], 'status')
local prepared = redis.call('HEXISTS', KEYS[1], 'prepared') == 1
if ARGV[4] == 'prepare' then
  if status == 'queued' then
    redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
  elseif status ~= 'running' or prepared then
    return nil
  end
elseif status ~= 'running' or not prepared then
  return nil
end
local held = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if held > tonumber(ARGV[1]) then return nil end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
local counter = 'prepare_attempts'
if ARGV[4] == 'upstream' then counter = 'attempts' end
return redis.call('HINCRBY', KEYS[1], counter, 1)
"""

# KEYS[1] leases; ARGV[1] now, ARGV[2] lease seconds, ARGV[3] how many, ARGV[4] queued grace,
# ARGV[5] the pacer's key prefix. For each job due a look: a live lease moves the look to
# its end; a job waiting for its turn in the pacer is left to the pacer's tickets (the
# sweeper replaces those a dead worker held) and looked at again after a grace; an
# expired lease is returned with its stage, and looked at again a lease (or a grace) later.
_SWEEP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(due) do
  local key = 'vq:job:' .. id
  local job = redis.call('HMGET', key, 'status', 'lease_until', 'received_until', 'model', 'tenant')
  local status = job[1]
  local held = tonumber(job[2] or '0')
  local received = tonumber(job[3] or '0')
  local prepared = redis.call('HEXISTS', key, 'prepared') == 1
  if not status or (status ~= 'queued' and status ~= 'running') then
    redis.call('ZREM', KEYS[1], id)
  elseif held > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], held, id)
  elseif status == 'queued' and received > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], received, id)
  elseif prepared and redis.call('ZSCORE', ARGV[5] .. job[4] .. ':q:' .. job[5], id) then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), id)
  else
    redis.call('HDEL', key, 'received_until')
    local stage = 'prepare'
    if prepared then stage = 'upstream' end
    local wait = tonumber(ARGV[2])
    if status == 'queued' then wait = tonumber(ARGV[4]) end
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + wait, id)
    table.insert(out, id)
    table.insert(out, stage)
    table.insert(out, job[4])
    table.insert(out, job[5])
  end
end
return out
"""

# KEYS[1] job, KEYS[2] leases; ARGV[1] until, ARGV[2] id. A worker got the job's message:
# should it die before starting the job, look again then instead of after the queued grace.
_RECEIVED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'received_until', ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] job, KEYS[2] leases; ARGV[1] lease end, ARGV[2] id. Only a held lease is renewed:
# a late renewal must not take back a job its stage has just handed on.
_RENEW = """
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] job, KEYS[2] leases; ARGV[1] next look, ARGV[2] id, ARGV[3] an attempt counter
# to take back one from, or "".
_RELEASE = """
if not redis.call('HGET', KEYS[1], 'status') then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0)
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[3], -1) end
return 1
"""


@dataclass(frozen=True)
class Expired:
    job_id: str
    stage: str  # "prepare" or "upstream": which task to queue again
    model: str
    tenant: str


class Leases:
    def __init__(self, client: redis.Redis, *, lease: float) -> None:
        self._redis = client
        self.lease = lease
        self._take = client.register_script(_TAKE)
        self._sweep = client.register_script(_SWEEP)
        self._renew = client.register_script(_RENEW)
        self._received = client.register_script(_RECEIVED)
        self._release = client.register_script(_RELEASE)

    def take(self, job_id: str, stage: str) -> int | None:
        """Hold the job for `stage`; the stage's attempt number, or None: leave it alone."""
        now = time.time()
        with redis_errors():
            reply = self._take(
                keys=[job_key(job_id), LEASES_KEY], args=[now, now + self.lease, job_id, stage]
            )
        return None if reply is None else int(reply)

    def received(self, job_id: str) -> bool:
        """A worker's main process took the job's message from the broker; False when the
        job is no longer queued (a worker started it, or it finished)."""
        with redis_errors():
            return bool(
                self._received(
                    keys=[job_key(job_id), LEASES_KEY], args=[time.time() + self.lease, job_id]
                )
            )

    def renew(self, job_id: str) -> None:
        with redis_errors():
            self._renew(keys=[job_key(job_id), LEASES_KEY], args=[time.time() + self.lease, job_id])

    def release(self, job_id: str, *, look_in: float, uncount: str | None = None) -> None:
        """Hand the job on: anyone may take it now; the sweeper looks `look_in` s from now.

        `uncount` ("prepare") gives back the attempt this holder took: it ended through
        no fault of the job (storage was down), so it must not count towards failing it.
        """
        counter = {None: "", "prepare": "prepare_attempts"}[uncount]
        with redis_errors():
            self._release(
                keys=[job_key(job_id), LEASES_KEY], args=[time.time() + look_in, job_id, counter]
            )

    def expired(self, *, queued_grace: float, limit: int = 200) -> list[Expired]:
        with redis_errors():
            flat = self._sweep(
                keys=[LEASES_KEY],
                args=[time.time(), self.lease, limit, queued_grace, PACE_PREFIX],
            )
        values = [v.decode() for v in flat]
        return [Expired(*values[i : i + 4]) for i in range(0, len(values), 4)]


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
