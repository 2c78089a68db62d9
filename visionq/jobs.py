"""The job record in Redis: its key schema, its guarded transitions, and the references
from jobs to the images they use. (`leases` also writes the lease fields of the hash and
takes a queued job to `running`; `outbox` writes its `webhook` field.)

A job is one hash, `vq:job:<id>`. Its status only moves forward,
`queued -> running -> succeeded | failed | canceled`, and every change of status goes
through one Lua script that compares and sets in a single step, so a task delivered twice
(Celery's at-least-once delivery) can neither send a job back nor finish it twice. A
terminal transition also publishes the id on `vq:done`, which is what `?wait=` blocks on.

A job's hash expires (a TTL from its creation, then `result_ttl` from its finish), but the
images it used must not stay behind: each stored image has the set of jobs that use it
(`vq:blob:<sha>`), each job the set of images it used (`vq:job-blobs:<id>`, which outlives
its hash), and `EXPIRY_KEY` says when each hash expires, kept in step with every EXPIRE
set here. `claim_expired` finds the jobs whose hash is gone and drops their references.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis

from visionq.errors import Canceled, Conflict, NotFound, Unavailable, VisionqError
from visionq.models import TERMINAL_STATUSES
from visionq.ops import metrics
from visionq.waiting import DONE_CHANNEL, CompletionWaiter

log = logging.getLogger(__name__)

#: The webhook outbox (see `outbox`): finishing a job with a webhook adds it here.
OUTBOX_KEY = "vq:webhooks:due"
#: Unfinished jobs by when the sweeper should look at them (see `leases`); a job enters it
#: when created and leaves it when finished or deleted.
LEASES_KEY = "vq:leases"
#: Prefix of the pacer's keys (visionq.pacing); a ready job waits in
#: `<prefix><model>:q:<tenant>`, which the lease sweep looks at too.
PACE_PREFIX = "vq:pace:"
#: Jobs by when their hash expires; a job leaves it once its images are seen to.
EXPIRY_KEY = "vq:expiry"
_JSON_FIELDS = ("images", "request", "result", "error", "webhook", "metadata")
#: A request larger than this (as JSON) is kept in the image store, not in the job's hash:
#: Redis holds every job for the result TTL, and one tenant's long prompts must not fill it.
REQUEST_INLINE_BYTES = 16 * 1024

# KEYS[1] job hash, KEYS[2] the done channel, KEYS[3] the webhook outbox, KEYS[4] leases,
# KEYS[5] the expiry index. ARGV[1] statuses allowed now (space separated), ARGV[2] new
# status or "", ARGV[3] TTL to set or 0, ARGV[4] job id when this finishes the job, else "",
# ARGV[5] now, ARGV[6] a field that must be absent or "", ARGV[7] job id, ARGV[8..]
# field/value pairs to set.
# A finishing step publishes the id (for waiters) and, when the job has a webhook, puts it
# in the outbox in the same step, so the event cannot be lost between the two.
# Returns 1 when applied, {0, current status} when refused, nil when missing.
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return nil end
if not string.find(' ' .. ARGV[1] .. ' ', ' ' .. cur .. ' ', 1, true) then return {0, cur} end
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[6]) == 1 then return {0, cur} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
if tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[7])
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  local webhook = redis.call('HGET', KEYS[1], 'webhook')
  if webhook and webhook ~= 'null' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) end
end
return 1
"""

# A new job, whole or not at all, in one command: one small reply to parse where a MULTI
# of seven commands had nine, a third of the submit's Redis client CPU (bench/intake.py).
# KEYS[1] job hash, KEYS[2] the expiry index, KEYS[3] the tenant's index, KEYS[4] leases,
# KEYS[5] the job's blob set, KEYS[6] the list its message goes to, KEYS[7] the key that
# remembers it (an Idempotency-Key), KEYS[8..] the sets of the images it uses. ARGV[1]
# job id, ARGV[2] TTL, ARGV[3] expiry score, ARGV[4] lease score, ARGV[5] message or "",
# ARGV[6] the remembering key's value or "", ARGV[7] its TTL, ARGV[8] n images, then the
# n image hashes, then the hash's field/value pairs.
_CREATE = """
local id, n = ARGV[1], tonumber(ARGV[8])
redis.call('HSET', KEYS[1], unpack(ARGV, 9 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], ARGV[4], id)
if ARGV[6] ~= '' then redis.call('SET', KEYS[7], ARGV[6], 'EX', ARGV[7]) end
for i = 1, n do redis.call('SADD', KEYS[7 + i], id) end
if n > 0 then redis.call('SADD', KEYS[5], unpack(ARGV, 9, 8 + n)) end
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[6], ARGV[5]) end
"""


def new_job_id() -> str:
    """Ids sort by creation time (microseconds, then randomness), which is what lets a
    tenant's list page newest-first with a cursor that new jobs never disturb. (Across
    API hosts the order is as good as their clocks.)"""
    return f"job_{time.time_ns() // 1000:014x}{secrets.token_hex(8)}"


def job_key(job_id: str) -> str:
    return f"vq:job:{job_id}"


def request_body_name(job_id: str) -> str:
    """Where, in the image store, a job's request is kept when it is too large for Redis
    (`REQUEST_INLINE_BYTES`): beside the upstream body, which is named by the job id."""
    return f"{job_id}.request"


def _tenant_key(tenant: str) -> str:
    """A sorted set of the tenant's job ids, all at score 0, so it orders by id (= by time)."""
    return f"vq:tenant:{tenant}:jobs"


def _blob_key(sha256: str) -> str:
    """The set of jobs that use a stored image; the image may go once it is empty."""
    return f"vq:blob:{sha256}"


def _blob_lock(sha256: str) -> str:
    return f"vq:blob:{sha256}:lock"


def _job_blobs_key(job_id: str) -> str:
    """The images a job uses, kept until its references are dropped (after its hash)."""
    return f"vq:job-blobs:{job_id}"


# Drops job ARGV[1]'s references to the images listed in KEYS[1] (its job-blobs set, kept:
# its caller deletes it once done); returns the images no job uses any more, each locked
# in the same step, so an intake adding a reference right after sees the lock and waits
# until the file is gone before it puts it back. The blob keys are derived here, which
# needs a single Redis (not a cluster), as every multi-key script of visionq does.
_DROP_REFERENCES = """
local function drop_references(blobs_key, job_id, lock_ms)
  local orphans = {}
  for _, sha in ipairs(redis.call('SMEMBERS', blobs_key)) do
    local users = 'vq:blob:' .. sha
    redis.call('SREM', users, job_id)
    if redis.call('SCARD', users) == 0 and
       redis.call('SET', users .. ':lock', job_id, 'NX', 'PX', lock_ms) then
      table.insert(orphans, sha)
    end
  end
  return orphans
end
"""

# KEYS[1] job, KEYS[2] tenant index, KEYS[3] leases, KEYS[4] expiry index, KEYS[5] the
# job's blobs; ARGV[1] job id, ARGV[2] lock time (ms), ARGV[3..] the images its record
# names (a job stored before its blobs were kept beside it has only those). Deletes the
# job and its references.
_DELETE = (
    _DROP_REFERENCES
    + """
if #ARGV > 2 then redis.call('SADD', KEYS[5], unpack(ARGV, 3)) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local orphans = drop_references(KEYS[5], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[5])
return orphans
"""
)

# KEYS[1] expiry index; ARGV[1] now, ARGV[2] how many, ARGV[3] claim time (s), ARGV[4] lock
# time (ms). For each job due: a hash still there (its host's clock ran ahead of Redis's)
# is looked at again when Redis expires it; a gone one is claimed for a while (another
# sweeper leaves it alone meanwhile, and takes it over should this one die) and comes back
# with its orphaned images: {id, n, sha1..shan, id, ...}.
_CLAIM_EXPIRED = (
    _DROP_REFERENCES
    + """
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local left = redis.call('PTTL', 'vq:job:' .. id)
  if left > 0 then
    redis.call('ZADD', KEYS[1], now + left / 1000, id)
  elseif left == -1 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    local orphans = drop_references('vq:job-blobs:' .. id, id, ARGV[4])
    table.insert(out, id)
    table.insert(out, #orphans)
    for _, sha in ipairs(orphans) do table.insert(out, sha) end
  end
end
return out
"""
)

# KEYS[1] job, KEYS[2] its blobs; ARGV[1] job id, ARGV[2..] images. Records that the job
# uses them, unless the job is gone (then nothing would ever drop the references).
_ADD_BLOBS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV do redis.call('SADD', 'vq:blob:' .. ARGV[i], ARGV[1]) end
redis.call('SADD', KEYS[2], unpack(ARGV, 2))
return 1
"""
_LOCK_MS = 10_000

# KEYS[1] an image's users, KEYS[2] its lock; ARGV[1] the holder, ARGV[2] lock time (ms).
# Just before the file goes: still ours, and still nobody's image? Then hold it a while
# more. An image a new job took up meanwhile is kept, and its lock let go.
_CONFIRM_ORPHAN = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('SCARD', KEYS[1]) > 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1] an image's lock; ARGV[1] the holder. A lock that ran out and was taken by
# another remover is not ours to release.
_RELEASE_BLOB = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: What a refused write says (Redis at `maxmemory`), for clients and operators alike.
STORE_FULL_MESSAGE = "the job store (Redis) is full and refuses writes; try again later"
#: How long a sweeper has to remove an expired job's files before another may take it over.
EXPIRY_CLAIM_SECONDS = 30
#: Ids one list page may look at (see `JobStore.list_jobs`).
MAX_LIST_SCAN = 1000


@contextmanager
def redis_errors() -> Iterator[None]:
    """Map a Redis outage to `Unavailable` at the boundary, never a traceback.

    A Redis at `maxmemory` (noeviction) refuses writes with OOM, and a replica promoted
    away from during a failover refuses them with READONLY: both pass once memory is
    freed or the failover ends, so both are outages too, not bugs.
    """
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable("the job store (Redis) is unreachable", retry_after=5) from exc
    except redis.exceptions.OutOfMemoryError as exc:
        raise Unavailable(STORE_FULL_MESSAGE, retry_after=5) from exc
    except redis.exceptions.ReadOnlyError as exc:
        raise Unavailable(
            "the job store (Redis) accepts no writes (read-only)", retry_after=5
        ) from exc


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: the public fields plus what only workers need (`request`, `tenant`)."""

    id: str
    tenant: str
    status: str
    fields: dict[str, Any]

    @property
    def request(self) -> dict[str, Any]:
        return self.fields["request"]

    @property
    def request_in_store(self) -> bool:
        """The request is kept in the image store (`request_body_name`), not here."""
        return "request" not in self.fields

    def with_request(self, request: dict[str, Any]) -> JobRecord:
        return JobRecord(self.id, self.tenant, self.status, {**self.fields, "request": request})

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.fields["images"]

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def public(self) -> dict[str, Any]:
        """The job object of API.md."""
        f = self.fields
        images = [
            {k: v for k, v in image.items() if k != "blob"} | _unvalidated_defaults(image)
            for image in f["images"]
        ]
        tokens = [image.get("image_tokens") for image in images]
        return {
            "id": self.id,
            "object": "job",
            "status": self.status,
            "model": f["model"],
            "api": f["api"],
            "created_at": f["created_at"],
            "started_at": f.get("started_at"),
            "completed_at": f.get("completed_at"),
            "images": images,
            "usage_estimate": {
                "image_tokens": sum(tokens) if tokens and None not in tokens else None
            },
            "result": f.get("result"),
            "error": f.get("error"),
            "attempts": int(f.get("attempts") or 0),
            "webhook": _public_webhook(f.get("webhook")),
            "metadata": f.get("metadata") or {},
        }


def _public_webhook(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The delivery state without `generation`, which only the outbox uses."""
    if state is None:
        return None
    return {k: v for k, v in state.items() if k != "generation"}


_IMAGE_FIELDS = ("format", "width", "height", "bytes", "sha256", "image_tokens")


def _unvalidated_defaults(image: dict[str, Any]) -> dict[str, Any]:
    return {name: image.get(name) for name in _IMAGE_FIELDS}


class JobStore:
    def __init__(self, client: redis.Redis, *, ttl: int, queued_grace: float) -> None:
        self._redis = client
        self._ttl = ttl
        self._queued_grace = queued_grace
        self._transition = client.register_script(_TRANSITION)
        self._delete = client.register_script(_DELETE)
        self._claim_expired = client.register_script(_CLAIM_EXPIRED)
        self._add_blobs = client.register_script(_ADD_BLOBS)
        self._create = client.register_script(_CREATE)
        self._confirm_orphan = client.register_script(_CONFIRM_ORPHAN)
        self._release_blob = client.register_script(_RELEASE_BLOB)
        self._waiter = CompletionWaiter(client)

    def create(
        self,
        *,
        tenant: str,
        model: str,
        api: str,
        request: dict[str, Any] | None,
        images: list[dict[str, Any]],
        webhook_url: str | None,
        metadata: dict[str, str] | None,
        remember: tuple[str, str, int] | None = None,
        request_id: str | None = None,
        message: Callable[[str], tuple[str, str]] | None = None,
        job_id: str | None = None,
    ) -> JobRecord:
        """Write a queued job. `remember` = (key, prefix, ttl): also set key to prefix + id,
        in the same transaction (how an Idempotency-Key comes to name its job).
        `request_id` is the API request's, kept so that every task's logs can name it.
        `message(job_id)` = (list, payload): a broker message LPUSHed in the same
        step, so the job and its first task are queued together, in one round trip.
        `request` None: it is too large to keep here, and the caller has stored it under
        `request_body_name(job_id)` (with the `job_id` it made for that)."""
        job_id = job_id or new_job_id()
        fields: dict[str, Any] = {
            "model": model,
            "api": api,
            "created_at": round(time.time(), 3),
            **({"request": request} if request is not None else {"request_body": 1}),
            "images": images,
            "attempts": 0,
            "webhook": (
                {
                    "url": webhook_url,
                    "status": "pending",
                    "attempts": 0,
                    "last_status_code": None,
                    "generation": 0,
                }
                if webhook_url
                else None
            ),
            "metadata": metadata or {},
            "request_id": request_id,
        }
        mapping = {"status": "queued", "tenant": tenant, **_encode(fields)}
        blobs = sorted({image["blob"] for image in images if image.get("blob")})
        queue, payload = message(job_id) if message is not None else (job_key(job_id), "")
        key, prefix, ttl = remember if remember is not None else (job_key(job_id), None, 0)
        now = time.time()
        with redis_errors():
            self._create(
                keys=[
                    job_key(job_id),
                    EXPIRY_KEY,
                    _tenant_key(tenant),
                    LEASES_KEY,
                    _job_blobs_key(job_id),
                    queue,
                    key,
                    *(_blob_key(sha) for sha in blobs),
                ],
                args=[
                    job_id,
                    self._ttl,
                    repr(now + self._ttl),
                    # Should its message be lost, the sweeper queues it again after the grace.
                    repr(now + self._queued_grace),
                    payload,
                    "" if prefix is None else prefix + job_id,
                    ttl,
                    len(blobs),
                    *blobs,
                    *(item for pair in mapping.items() for item in pair),
                ],
            )
        return JobRecord(job_id, tenant, "queued", fields)

    def blob_being_deleted(self, sha256: str) -> bool:
        with redis_errors():
            return bool(self._redis.exists(_blob_lock(sha256)))

    def list_jobs(
        self, *, tenant: str, status: str | None, limit: int, after: str | None
    ) -> tuple[list[JobRecord], str | None]:
        """A page of the tenant's jobs, newest first, after the cursor `after` (a job id),
        and the cursor of the next page (None at the end).

        Ids order by creation time, so a job added while a client pages lands before its
        cursor and never shifts a later page. One page looks at no more than
        `MAX_LIST_SCAN` ids, so a rare status cannot make one request walk a tenant's
        whole history: such a page may hold fewer than `limit` jobs and still have a next.
        Ids of expired jobs are dropped as they are met.
        """
        index = _tenant_key(tenant)
        found: list[JobRecord] = []
        upper = f"({after}" if after else "+"
        scanned = 0
        last_seen: str | None = None
        with redis_errors():
            while len(found) < limit and scanned < MAX_LIST_SCAN:
                batch = min(max(limit, 50), MAX_LIST_SCAN - scanned)
                page = self._redis.zrevrangebylex(index, upper, "-", start=0, num=batch)
                ids = [i.decode() for i in cast(list[bytes], page)]
                if not ids:
                    return found, None
                pipe = self._redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hgetall(job_key(job_id))
                for job_id, raw in zip(ids, pipe.execute(), strict=True):
                    scanned += 1
                    last_seen = job_id
                    record = self._record(job_id, raw)
                    if record is None:
                        self._redis.zrem(index, job_id)
                    elif status is None or record.status == status:
                        found.append(record)
                        if len(found) == limit:
                            break
                upper = f"({last_seen}"
            more = self._redis.zrevrangebylex(index, upper, "-", start=0, num=1)
        return found, (last_seen if more else None)

    def delete(self, job_id: str, *, tenant: str) -> list[str]:
        """Remove the job; returns the stored images that no other job uses, now locked.

        The caller deletes those images and then calls `release_blob`; an intake that
        stores the same bytes meanwhile sees the lock and stores them again afterwards.
        """
        record = self.get(job_id, tenant=tenant)
        blobs = {i[k] for i in record.images for k in ("blob", "sha256") if i.get(k)}
        keys = [
            job_key(job_id),
            _tenant_key(tenant),
            LEASES_KEY,
            EXPIRY_KEY,
            _job_blobs_key(job_id),
        ]
        with redis_errors():
            orphans = self._delete(keys=keys, args=[job_id, _LOCK_MS, *sorted(blobs)])
        return [sha.decode() for sha in orphans]

    def claim_expired(self, *, now: float, limit: int) -> list[tuple[str, list[str]]]:
        """Up to `limit` jobs whose hash has expired, each with the images no job uses any
        more (locked, as for `delete`), claimed for `EXPIRY_CLAIM_SECONDS`.

        One Redis call, whatever is due. The caller removes the files, calls
        `release_blob` for each image, then `forget_expired`; should it die before, the
        job comes due again once the claim and the locks have run out.
        """
        with redis_errors():
            reply = self._claim_expired(
                keys=[EXPIRY_KEY], args=[now, limit, EXPIRY_CLAIM_SECONDS, _LOCK_MS]
            )
        claimed: list[tuple[str, list[str]]] = []
        at = 0
        while at < len(reply):
            count = int(reply[at + 1])
            shas = [sha.decode() for sha in reply[at + 2 : at + 2 + count]]
            claimed.append((reply[at].decode(), shas))
            at += 2 + count
        return claimed

    def forget_expired(self, job_ids: list[str]) -> None:
        """The expired jobs' files are gone: drop what was kept to find them."""
        if not job_ids:
            return
        with redis_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrem(EXPIRY_KEY, *job_ids)
            pipe.delete(*(_job_blobs_key(job_id) for job_id in job_ids))
            pipe.execute()

    def confirm_orphan(self, sha256: str, *, holder: str) -> bool:
        """Whether the image may go now: `holder` (the job whose references were dropped)
        still holds its lock, renewed for the delete, and no job has taken it up since.
        Deleting many images takes a while, longer than a lock taken for all at once."""
        with redis_errors():
            keys = [_blob_key(sha256), _blob_lock(sha256)]
            return bool(self._confirm_orphan(keys=keys, args=[holder, _LOCK_MS]))

    def release_blob(self, sha256: str, *, holder: str) -> None:
        with redis_errors():
            self._release_blob(keys=[_blob_lock(sha256)], args=[holder])

    def load(self, job_id: str) -> JobRecord | None:
        with redis_errors():
            raw = self._redis.hgetall(job_key(job_id))
        return self._record(job_id, cast(dict[bytes, bytes], raw))

    @staticmethod
    def _record(job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
        if not raw:
            return None
        decoded = {k.decode(): v.decode() for k, v in raw.items()}
        status = decoded.pop("status")
        tenant = decoded.pop("tenant")
        return JobRecord(job_id, tenant, status, _decode(decoded))

    def get(self, job_id: str, *, tenant: str) -> JobRecord:
        """The job if `tenant` owns it; another tenant's job is as unknown as a missing one."""
        record = self.load(job_id) if job_id.startswith("job_") else None
        if record is None or record.tenant != tenant:
            raise NotFound(f"no job {job_id!r}", param="id")
        return record

    def _apply(
        self,
        job_id: str,
        *,
        allowed: tuple[str, ...],
        status: str = "",
        fields: dict[str, Any] | None = None,
        unless: str = "",
    ) -> bool:
        """Run the guarded transition; whether it was applied."""
        terminal = status in TERMINAL_STATUSES
        args: list[Any] = [
            " ".join(allowed),
            status,
            self._ttl if terminal else 0,
            job_id if terminal else "",
            time.time(),
            unless,
            job_id,
        ]
        for name, value in _encode(fields or {}).items():
            args += [name, value]
        with redis_errors():
            reply = self._transition(
                keys=[job_key(job_id), DONE_CHANNEL, OUTBOX_KEY, LEASES_KEY, EXPIRY_KEY],
                args=args,
            )
        return reply == 1

    def save_images(self, job_id: str, images: list[dict[str, Any]], *, input_tokens: int) -> bool:
        """Record the prepared images and the input's token estimate, once: only the first
        of two racing prepares wins. (The estimate is kept so that the upstream stage,
        which charges it to the budget, never needs the request itself.)

        The references come first: every image this prepare stored (a fetched original,
        a resized copy) is then removed with the job even should the record be refused.
        """
        shas = sorted({image[k] for image in images for k in ("blob", "sha256") if image.get(k)})
        if shas:
            with redis_errors():
                self._add_blobs(
                    keys=[job_key(job_id), _job_blobs_key(job_id)], args=[job_id, *shas]
                )
        return self._apply(
            job_id,
            allowed=("running",),
            fields={"images": images, "input_tokens": input_tokens, "prepared": 1},
            unless="prepared",
        )

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        return self._finish(job_id, "succeeded", {"result": result})

    def fail(self, job_id: str, error: VisionqError) -> bool:
        return self._finish(job_id, "failed", {"error": error.to_dict()})

    def cancel(self, job_id: str, *, tenant: str) -> JobRecord:
        """Cancel an unfinished job; a finished one is a conflict (API.md)."""
        record = self.get(job_id, tenant=tenant)
        if not record.finished:
            error = Canceled("canceled by the client")
            if self._finish(job_id, "canceled", {"error": error.to_dict()}):
                # Counted where the transition is applied: of two racing cancels, only
                # the one that made it counts.
                metrics.JOBS_FINISHED.labels(record.fields["model"], "canceled", error.type).inc()
                log.info("job canceled", extra={"job_id": job_id, "status": "canceled"})
            record = self.get(job_id, tenant=tenant)
        if record.status != "canceled":
            raise Conflict(f"job {job_id} is already {record.status}", param="id")
        return record

    def _finish(self, job_id: str, status: str, fields: dict[str, Any]) -> bool:
        fields = {**fields, "completed_at": round(time.time(), 3)}
        return self._apply(job_id, allowed=("queued", "running"), status=status, fields=fields)

    def wait(self, job_id: str, *, tenant: str, timeout: float) -> JobRecord:
        """The job, once finished or after `timeout` seconds, whichever comes first."""
        record = self.get(job_id, tenant=tenant)
        if record.finished or timeout <= 0:
            return record
        self._waiter.wait(job_id, timeout, lambda: self.get(job_id, tenant=tenant).finished)
        return self.get(job_id, tenant=tenant)

    def ping(self) -> None:
        with redis_errors():
            self._redis.ping()


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif value is not None:
            out[name] = str(value)
    return out


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON_FIELDS:
            out[name] = json.loads(value)
        elif name in ("created_at", "started_at", "completed_at"):
            out[name] = float(value)
        elif name in ("attempts", "input_tokens"):
            out[name] = int(value)
        else:
            out[name] = value
    return out
