"""The job record in Redis: a job's hash, its tenant's index, and its guarded transitions.

A job is one hash (`keys.job`). Its status only moves forward,
`queued -> running -> succeeded | failed | canceled`, and every change of status but one
goes through one Lua script (`jobs/transition`) that compares and sets in a single step,
so a task delivered twice (Celery's at-least-once delivery) can neither send a job back
nor finish it twice. The one other is the first prepare's `queued -> running`, made by
`leases/take` in the same step as the lease it takes. A terminal transition also
publishes the id on `keys.DONE_CHANNEL`, which is what `?wait=` blocks on (`completion`).

The hash's fields have three owners: the record (status, request, images, result, error
and the times) is this module's; the lease fields (`lease_until`, `received_until` and
the attempt counters) are `leases`'; the `webhook` field's delivery state is `outbox`'s.
This module writes the others' fields only where a new job starts them (`jobs/create`).

A step that must change several families of keys at once is one script, kept by the
owner of the family the step is about, and its header lists every family it writes:
`jobs/create` also writes the lease index, the image references and the expiry index
(`blobs`), the Idempotency-Key (`idempotency`) and the broker's list; `jobs/transition`
also writes the expiry index, the lease index and the outbox. Two scripts of others
write this module's keys in turn: `leases/take` (above) and `blobs/delete_job`, which
removes a deleted job's hash and its tenant index entry with its image references.
Outside scripts, each module writes only its own keys. A job's hash expires (a TTL from
its creation, then `result_ttl` from its finish); `blobs` removes what it leaves behind.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from visionq.errors import (
    Canceled,
    Conflict,
    DeadlineExceeded,
    NotFound,
    StaleLine,
    VisionqError,
)
from visionq.models import TERMINAL_STATUSES, StoredRequest, StoredResult
from visionq.ops import metrics
from visionq.settings import Price
from visionq.state import keys
from visionq.state.blobs import Blobs
from visionq.state.completion import CompletionWaiter
from visionq.state.idempotency import IdempotencyRecord
from visionq.state.records import (
    Api,
    ImageRecord,
    JobFields,
    JobRecord,
    encode_fields,
    record_from_hash,
)
from visionq.state.redis import NO_REPLICAS, Replicas, redis_errors, script
from visionq.usage import counters, dollars

log = logging.getLogger(__name__)

#: A request larger than this (as JSON) is kept in the image store, not in the job's hash:
#: Redis holds every job for the result TTL, and one tenant's long prompts must not fill it.
REQUEST_INLINE_BYTES = 16 * 1024
#: Ids one list page may look at (see `JobStore.list_jobs`).
MAX_LIST_SCAN = 1000

#: Given a new job's id, its first broker message: the list it goes to and the payload
#: (`visionq.broker.Broker.prepare_push`). `JobStore.create` pushes it in the same step as
#: the job, so the job and its first task are queued together, in one round trip.
FirstMessage = Callable[[str], tuple[str, str]]


@dataclass(frozen=True)
class BatchLine:
    """What makes a new job a batch's line: `JobStore.create` admits it only while `line`
    is the batch's next, and moves the batch past it (to `next_cursor`) in the same step."""

    batch_id: str
    line: int
    custom_id: str
    next_cursor: int
    #: The batch's priority is `batch`: its lines wait behind interactive jobs.
    behind: bool = True


#: A finished batch line's counter on its batch, from how the job ended.
def _usage_argument(counted: dict[str, int], *, account: str, now: float, retention: int) -> str:
    """What `jobs/transition` adds to the tenant's usage for one finish (its ARGV[13])."""
    when = datetime.fromtimestamp(now, UTC)
    tokens = counted.get("prompt_tokens", 0) + counted.get("completion_tokens", 0)
    return json.dumps(
        {
            "p": keys.USAGE_PREFIX,
            "t": keys.USAGE_TENANTS,
            "q": keys.QUOTA_PREFIX,
            "h": when.strftime("%Y%m%d%H"),
            "d": when.strftime("%Y%m%d"),
            "m": when.strftime("%Y%m"),
            "ttl": retention,
            "a": account,
            "c": counted,
            "tokens": tokens,
        },
        separators=(",", ":"),
    )


def _batch_counter(status: str, error: VisionqError | None) -> str:
    if status == "succeeded":
        return "completed"
    if status == "canceled":
        return "canceled"
    return "expired" if error is not None and error.type == "batch_expired" else "failed"


def new_job_id() -> str:
    """Ids sort by creation time (microseconds, then randomness), which is what lets a
    tenant's list page newest-first with a cursor that new jobs never disturb. (Across
    API hosts the order is as good as their clocks.)"""
    return f"job_{time.time_ns() // 1000:014x}{secrets.token_hex(8)}"


def request_body_name(job_id: str) -> str:
    """Where, in the image store, a job's request is kept when it is too large for Redis
    (`REQUEST_INLINE_BYTES`): beside the upstream body, which is named by the job id."""
    return f"{job_id}.request"


class JobStore:
    """The job records of one Redis. `clock` gives Unix time now: the times recorded and
    the scores of the lease and expiry indexes come from it (tests move it ahead)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: int,
        queued_grace: float,
        clock: Callable[[], float] = time.time,
        wake_batch: Callable[[str], object] | None = None,
        replicas: Replicas = NO_REPLICAS,
        usage_retention: int | None = 400 * 86400,
    ) -> None:
        """`wake_batch(batch_id)` queues a batch's task: called when a line's finish leaves
        the batch room for more lines, or none running (the transition says when).
        `usage_retention`: seconds the usage counters a finish adds to are kept (None:
        finishes add to none)."""
        self._redis = client
        self._usage_retention = usage_retention
        self._wake_batch = wake_batch
        self._replicas = replicas
        self._ttl = ttl
        self._queued_grace = queued_grace
        self._clock = clock
        self._transition = script(client, "jobs/transition")
        self._create = script(client, "jobs/create")
        self._waiter = CompletionWaiter(client)
        #: The references from this store's jobs to their images.
        self.blobs = Blobs(client)

    def create(
        self,
        *,
        tenant: str,
        model: str,
        api: Api,
        request: StoredRequest | None,
        images: list[ImageRecord],
        webhook_url: str | None,
        metadata: dict[str, str] | None,
        remember: IdempotencyRecord | None = None,
        request_id: str | None = None,
        message: FirstMessage | None = None,
        job_id: str | None = None,
        batch: BatchLine | None = None,
        deadline: float | None = None,
    ) -> JobRecord:
        """Write a queued job, and in the same step `remember` (how an Idempotency-Key
        comes to name its job) and `message(job_id)`, its first broker message.
        `request_id` is the API request's, kept so that every task's logs can name it.
        `request` None: it is too large to keep here, and the caller has stored it under
        `request_body_name(job_id)` (with the `job_id` it made for that).
        A `batch` line is admitted in the same step, or `StaleLine` when its batch has
        moved past the line (nothing is written then). A job with a `deadline` (Unix
        seconds) is canceled should it still wait for a worker or the budget then
        (`cancel_overdue`)."""
        job_id = job_id or new_job_id()
        now = self._clock()
        fields: JobFields = {
            "model": model,
            "api": api,
            "created_at": round(now, 3),
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
        if batch is not None:
            fields["batch_id"], fields["custom_id"] = batch.batch_id, batch.custom_id
            fields["line"] = batch.line
            if batch.behind:
                fields["lane"] = "batch"
        if request is not None:
            fields["request"] = request
        else:
            fields["request_body"] = 1
        if deadline is not None:
            fields["deadline"] = deadline
        mapping = {"status": "queued", "tenant": tenant, **encode_fields(fields)}
        blobs = sorted({image["blob"] for image in images if image.get("blob")})
        queue, payload = message(job_id) if message is not None else (keys.job(job_id), "")
        remembered = (
            (remember.key, remember.value_prefix + job_id, remember.ttl)
            if remember is not None
            else (keys.job(job_id), "", 0)
        )
        batch_keys = (
            [
                keys.batch(batch.batch_id),
                keys.batch_part(batch.batch_id, keys.BATCH_JOBS_SUFFIX),
                keys.batch_part(batch.batch_id, keys.BATCH_OPEN_SUFFIX),
            ]
            if batch is not None
            else [keys.job(job_id)] * 3
        )
        with redis_errors():
            created = self._create(
                keys=[
                    keys.job(job_id),
                    keys.EXPIRY,
                    keys.tenant_jobs(tenant),
                    keys.LEASES,
                    keys.job_blobs(job_id),
                    queue,
                    remembered[0],
                    *batch_keys,
                    keys.DEADLINES,
                    *(keys.blob(sha) for sha in blobs),
                ],
                args=[
                    job_id,
                    self._ttl,
                    repr(now + self._ttl),
                    # Should its message be lost, the sweeper queues it again after the grace.
                    repr(now + self._queued_grace),
                    payload,
                    remembered[1],
                    remembered[2],
                    len(blobs),
                    "" if batch is None else batch.line,
                    0 if batch is None else batch.next_cursor,
                    "" if deadline is None else repr(deadline),
                    *blobs,
                    *(item for pair in mapping.items() for item in pair),
                ],
            )
        if created != 1:
            raise StaleLine(f"the batch has moved past line {batch.line if batch else 0}")
        if batch is None:  # a line's admission is kept by its batch, on the same master
            self._replicas.confirm(self._redis)
        return JobRecord(job_id, tenant, "queued", fields)

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
        index = keys.tenant_jobs(tenant)
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
                    pipe.hgetall(keys.job(job_id))
                for job_id, raw in zip(ids, pipe.execute(), strict=True):
                    scanned += 1
                    last_seen = job_id
                    record = record_from_hash(job_id, raw)
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
        """Remove the job if `tenant` owns it; returns the stored images that no other
        job uses, now locked for the caller to remove (`Blobs.delete_job`)."""
        record = self.get(job_id, tenant=tenant)
        named = {sha for i in record.images for sha in (i.get("blob"), i.get("sha256")) if sha}
        return self.blobs.delete_job(job_id, tenant=tenant, named=named)

    def load(self, job_id: str) -> JobRecord | None:
        with redis_errors():
            raw = self._redis.hgetall(keys.job(job_id))
        return record_from_hash(job_id, cast(dict[bytes, bytes], raw))

    def load_many(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """The records of those of `job_ids` that still exist, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        with redis_errors():
            raws = pipe.execute()
        found = (record_from_hash(job_id, raw) for job_id, raw in zip(job_ids, raws, strict=True))
        return {record.id: record for record in found if record is not None}

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
        counter: str = "failed",
        usage: dict[str, Any] | None = None,
        counted: str = "",
    ) -> bool:
        """Run the guarded transition; whether it was applied. A finish of a batch line
        adds to its batch's `counter` (and, for a success, the `usage`); a finish adds
        `counted` (`_usage_argument`) to its tenant's usage."""
        terminal = status in TERMINAL_STATUSES
        usage = usage or {}
        args: list[Any] = [
            " ".join(allowed),
            status,
            self._ttl if terminal else 0,
            job_id if terminal else "",
            self._clock(),
            unless,
            job_id,
            keys.BATCH_PREFIX,
            keys.BATCH_OPEN_SUFFIX,
            counter,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            counted,
        ]
        for name, value in encode_fields(fields or {}).items():
            args += [name, value]
        with redis_errors():
            reply = self._transition(
                keys=[
                    keys.job(job_id),
                    keys.DONE_CHANNEL,
                    keys.OUTBOX,
                    keys.LEASES,
                    keys.EXPIRY,
                    keys.DEADLINES,
                ],
                args=args,
            )
        if isinstance(reply, list) and reply[0] == 2:
            if self._wake_batch is not None:
                self._wake_batch(reply[1].decode())
            return True
        return bool(reply == 1)

    def save_images(self, job_id: str, images: list[ImageRecord], *, input_tokens: int) -> bool:
        """Record the prepared images and the input's token estimate, once: only the first
        of two racing prepares wins. (The estimate is kept so that the upstream stage,
        which charges it to the budget, never needs the request itself.)

        The references come first: every image this prepare stored (a fetched original,
        a resized copy) is then removed with the job even should the record be refused.
        """
        shas = sorted({sha for i in images for sha in (i.get("blob"), i.get("sha256")) if sha})
        if shas:
            self.blobs.add(job_id, shas)
        return self._apply(
            job_id,
            allowed=("running",),
            fields={"images": images, "input_tokens": input_tokens, "prepared": 1},
            unless="prepared",
        )

    def succeed(
        self,
        job_id: str,
        result: StoredResult,
        *,
        account: str | None = None,
        price: Price | None = None,
        image_tokens: int = 0,
    ) -> bool:
        """`account`: the upstream account that answered; `price`: the model's, for the
        job's cost; `image_tokens`: the service's count, for an answer that has none."""
        counted = counters(
            result["usage"], status="succeeded", image_tokens=image_tokens, price=price
        )
        fields: dict[str, Any] = {"result": result, "account": account}
        if price is not None and self._usage_retention is not None:
            fields["cost"] = dollars(counted.get("cost_nanos", 0))
        return self._finish(
            job_id,
            "succeeded",
            fields,
            counter="completed",
            usage=result["usage"],
            counted=counted,
            account=account,
        )

    def fail(self, job_id: str, error: VisionqError, *, account: str | None = None) -> bool:
        """`account`: the upstream account whose answer failed the job, if one did."""
        fields = {"error": error.to_dict(), "account": account}
        return self._finish(
            job_id, "failed", fields, counter=_batch_counter("failed", error), account=account
        )

    def end_line(self, job_id: str, error: VisionqError) -> bool:
        """End an unfinished batch line that its batch no longer runs: `canceled` when
        the batch was cancelled, `failed` with `batch_expired` when it expired."""
        status = "canceled" if error.type == "canceled" else "failed"
        return self._finish(
            job_id, status, {"error": error.to_dict()}, counter=_batch_counter(status, error)
        )

    def miss_deadline(self, job_id: str, *, held_here: bool = True) -> bool:
        """End a job whose deadline passed before its call: `canceled`, with
        `deadline_exceeded`. `held_here`: the caller holds its lease (a worker about to
        work on it); else it ends only if nobody does."""
        error = DeadlineExceeded("its deadline (Cancel-After) passed before it was sent upstream")
        return self._finish(
            job_id,
            "canceled",
            {"error": error.to_dict()},
            counter="canceled",
            unless="" if held_here else "lease_until",
        )

    def cancel_overdue(self, *, limit: int = 200) -> list[str]:
        """End the jobs whose deadline passed while they waited for a worker or the budget
        (the sweeper's); their ids. One waited on now is left to its worker, which checks
        the deadline before its call."""
        now = self._clock()
        with redis_errors():
            due = self._redis.zrangebyscore(keys.DEADLINES, "-inf", now, 0, limit)
        ended, gone = [], []
        for job_id in (i.decode() for i in cast(list[bytes], due)):
            if self.miss_deadline(job_id, held_here=False):
                ended.append(job_id)
                with redis_errors():
                    model = cast(bytes | None, self._redis.hget(keys.job(job_id), "model"))
                model_name = model.decode() if model else ""
                metrics.JOBS_FINISHED.labels(model_name, "canceled", "deadline_exceeded").inc()
                continue
            with redis_errors():
                status = cast(bytes | None, self._redis.hget(keys.job(job_id), "status"))
            if status is None or status.decode() in TERMINAL_STATUSES:
                gone.append(job_id)  # finished, deleted or expired meanwhile
        if gone:
            with redis_errors():
                self._redis.zrem(keys.DEADLINES, *gone)
        return ended

    def cancel(self, job_id: str, *, tenant: str) -> JobRecord:
        """Cancel an unfinished job; a finished one is a conflict (API.md)."""
        record = self.get(job_id, tenant=tenant)
        if not record.finished:
            error = Canceled("canceled by the client")
            if self._finish(job_id, "canceled", {"error": error.to_dict()}, counter="canceled"):
                # Counted where the transition is applied: of two racing cancels, only
                # the one that made it counts.
                metrics.JOBS_FINISHED.labels(record.model, "canceled", error.type).inc()
                log.info("job canceled", extra={"job_id": job_id, "status": "canceled"})
            record = self.get(job_id, tenant=tenant)
        if record.status != "canceled":
            raise Conflict(f"job {job_id} is already {record.status}", param="id")
        return record

    def _finish(
        self,
        job_id: str,
        status: str,
        fields: dict[str, Any],
        *,
        counter: str,
        usage: dict[str, Any] | None = None,
        counted: dict[str, int] | None = None,
        account: str | None = None,
        unless: str = "",
    ) -> bool:
        """A terminal transition, which also adds to the tenant's usage (`counted`, else
        just the job's status) in the same step."""
        now = self._clock()
        fields = {**fields, "completed_at": round(now, 3)}
        return self._apply(
            job_id,
            allowed=("queued", "running"),
            status=status,
            fields=fields,
            unless=unless,
            counter=counter,
            usage=usage,
            counted=""
            if self._usage_retention is None
            else _usage_argument(
                counted or {f"jobs_{status}": 1},
                account=account or "",
                now=now,
                retention=self._usage_retention,
            ),
        )

    def wait(self, job_id: str, *, tenant: str, timeout: float) -> JobRecord:
        """The job, once finished or after `timeout` seconds, whichever comes first: two
        reads of the record when it has to wait (`CompletionWaiter.watching`)."""
        if timeout <= 0:
            return self.get(job_id, tenant=tenant)
        with self._waiter.watching(job_id, subscribe_within=min(timeout, 5.0)) as finished:
            record = self.get(job_id, tenant=tenant)
            if record.finished:
                return record
            finished.wait(timeout)
        return self.get(job_id, tenant=tenant)

    def ping(self) -> None:
        with redis_errors():
            self._redis.ping()
