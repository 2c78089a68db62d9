"""The batch record in Redis: a batch's hash, its lines' jobs, its lock, and its steps.

A batch is one hash (`keys.batch`) whose status moves as OpenAI's does:
`validating -> in_progress -> finalizing -> completed`, or `-> failed` (its file broke the
rules), `-> cancelling -> cancelled`, `-> finalizing -> expired`. Its lines become jobs
only a window at a time (`window` lines admitted and unfinished at most): the admission of
a line is part of the job's own creation (`jobs/create`, which moves the batch's `line`
and `cursor` past it), and the finish of a line's job is counted on the batch in the job's
own terminal transition (`jobs/transition`), so the batch's counts never disagree with
its jobs, whatever worker dies where.

One worker at a time advances a batch, under its lock (`lock`/`unlock`); anything that
wants it advanced (a line's finish that leaves room, a cancel) sets the batch's `wake`
flag and queues its task. A holder sees the flag when it lets go and goes round once
more, so a wake-up that found the lock held is never lost; the sweeper queues the task
of any unended batch whose lock nobody holds, as the net for a lost message or a dead
holder (`claim_due`).

This module owns every key under `keys.BATCH_PREFIX`, the tenants' batch indexes and
`keys.BATCHES_DUE`. `jobs/create` and `jobs/transition` write the batch's counters, its
line jobs and its open set in the same step as a line's job; `batches/finish` puts an
ended batch with a webhook in the outbox (`outbox`'s key).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict, cast

import redis

from visionq.errors import NotFound
from visionq.models import BatchStatus
from visionq.state import keys
from visionq.state.pages import index_page
from visionq.state.records import WebhookRecord
from visionq.state.redis import NO_REPLICAS, Replicas, redis_errors, script

BatchApi = Literal["openai", "anthropic"]
ENDED: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})
#: How many lines of a batch may be jobs at once, unless configured (`batch_window`).
COUNTERS = ("completed", "failed", "canceled", "expired")
#: A batch that never ends (its workers gone for good) still leaves Redis in the end.
UNENDED_TTL = 30 * 86_400


class BatchFields(TypedDict, total=False):
    """The batch hash's fields besides `status` and `tenant`, as `_decode` reads them."""

    api: Required[BatchApi]
    endpoint: Required[str]
    input_file_id: Required[str]
    completion_window: Required[str]
    created_at: Required[float]
    expires_at: Required[float]
    priority: Required[Literal["batch", "interactive"]]
    window: Required[int]
    metadata: dict[str, str] | None
    webhook: WebhookRecord | None
    errors: list[dict[str, Any]] | None
    in_progress_at: float
    finalizing_at: float
    completed_at: float
    failed_at: float
    expired_at: float
    cancelling_at: float
    cancelled_at: float
    #: Lines in the input (known once validated), lines admitted (jobs made, or refused),
    #: the next line to admit (1-based) and the byte offset where it starts.
    total: int
    admitted: int
    line: int
    cursor: int
    in_flight: int
    completed: int
    failed: int
    canceled: int
    expired: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    #: Set when the batch's lines were stopped: "cancelled" or "expired".
    ending: str
    output_file_id: str
    error_file_id: str
    #: The ids the finalizer writes its files under, chosen before it writes them: a run
    #: after a crash writes the same files again instead of leaving the first ones behind.
    output_file_next: str
    error_file_next: str


@dataclass(frozen=True)
class BatchRecord:
    id: str
    tenant: str
    status: BatchStatus
    fields: BatchFields

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def count(self, name: str) -> int:
        return int(cast(dict[str, Any], self.fields).get(name) or 0)


_JSON = ("metadata", "webhook", "errors")
_FLOATS = (
    "created_at",
    "expires_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
_INTS = (
    "window",
    "total",
    "admitted",
    "line",
    "cursor",
    "in_flight",
    *COUNTERS,
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
)


def _encode(fields: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        if name in _JSON:
            out += [name, json.dumps(value, separators=(",", ":"))]
        elif value is not None:
            out += [name, repr(value) if isinstance(value, float) else str(value)]
    return out


def _decode(raw: dict[str, str]) -> BatchFields:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON:
            out[name] = json.loads(value)
        elif name in _FLOATS:
            out[name] = float(value)
        elif name in _INTS:
            out[name] = int(value)
        else:
            out[name] = value
    return cast(BatchFields, out)


def new_batch_id() -> str:
    """Time-sorted, like job ids: a tenant's list pages newest first by id."""
    return f"batch_{time.time_ns() // 1000:014x}{secrets.token_hex(8)}"


#: The batch task's message for a batch id: the broker list and the payload to push.
BatchMessage = Callable[[str], tuple[str, str]]


class BatchStore:
    """The batches of one Redis. `message(batch_id)` is the batch task's broker message
    (`visionq.broker.Broker.batch_push`), queued in the same step as what wakes it."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: int,
        message: BatchMessage,
        lock_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        """`lock_seconds`: how long the lock of a worker advancing a batch lasts
        unrenewed, and so how soon the sweeper gives a dead holder's batch to another
        (a job's lease, like every other stage)."""
        self._redis = client
        self._replicas = replicas
        self.lock_seconds = lock_seconds
        self._ttl = ttl
        self._message = message
        self._clock = clock
        self._create = script(client, "batches/create")
        self._move = script(client, "batches/move")
        self._finish = script(client, "batches/finish")
        self._refuse_line = script(client, "batches/refuse_line")
        self._lock = script(client, "batches/lock")
        self._unlock = script(client, "batches/unlock")
        self._renew_lock = script(client, "batches/renew_lock")
        self._claim_due = script(client, "batches/claim_due")

    def create(self, *, tenant: str, fields: BatchFields) -> BatchRecord:
        """Write a `validating` batch and queue its task, in one step."""
        batch_id = new_batch_id()
        now = self._clock()
        fields = {**fields, "line": 1, "cursor": 0, "admitted": 0, "in_flight": 0}
        queue, payload = self._message(batch_id)
        mapping = ["status", "validating", "tenant", tenant, *_encode(dict(fields))]
        with redis_errors():
            self._create(
                keys=[keys.batch(batch_id), keys.tenant_batches(tenant), keys.BATCHES_DUE, queue],
                args=[batch_id, now + self.lock_seconds, payload, UNENDED_TTL, *mapping],
            )
        self._replicas.confirm(self._redis)
        return BatchRecord(batch_id, tenant, "validating", fields)

    def load(self, batch_id: str) -> BatchRecord | None:
        with redis_errors():
            raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.batch(batch_id)))
        return self._record(batch_id, raw)

    @staticmethod
    def _record(batch_id: str, raw: dict[bytes, bytes]) -> BatchRecord | None:
        if not raw or b"status" not in raw:
            return None
        decoded = {k.decode(): v.decode() for k, v in raw.items()}
        status = cast(BatchStatus, decoded.pop("status"))
        tenant = decoded.pop("tenant")
        decoded.pop("wake", None)
        return BatchRecord(batch_id, tenant, status, _decode(decoded))

    def get(self, batch_id: str, *, tenant: str) -> BatchRecord:
        """The batch if `tenant` owns it; another tenant's is as unknown as a missing one."""
        record = self.load(batch_id) if batch_id.startswith("batch_") else None
        if record is None or record.tenant != tenant:
            raise NotFound(f"no batch {batch_id!r}", param="batch_id")
        return record

    def list_batches(
        self, *, tenant: str, limit: int, after: str | None
    ) -> tuple[list[BatchRecord], bool]:
        """A page of the tenant's batches, newest first, after the batch `after`, and
        whether more follow. Ids of batches that expired are dropped as they are met."""
        return index_page(
            self._redis,
            keys.tenant_batches(tenant),
            key=keys.batch,
            read=self._record,
            limit=limit,
            after=after,
        )

    def delete(self, batch_id: str, *, tenant: str) -> None:
        """Remove an ended batch's record and what it kept beside it (its line jobs stay,
        until their own TTL)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(
            keys.batch(batch_id),
            *(
                keys.batch_part(batch_id, suffix)
                for suffix in (keys.BATCH_JOBS_SUFFIX, keys.BATCH_REFUSED_SUFFIX)
            ),
        )
        pipe.zrem(keys.tenant_batches(tenant), batch_id)
        with redis_errors():
            pipe.execute()

    def move(
        self,
        batch_id: str,
        *,
        allowed: tuple[str, ...],
        status: str = "",
        fields: dict[str, Any] | None = None,
        wake: bool = False,
    ) -> bool:
        """A guarded step before the batch ends; with `wake`, its task is queued too."""
        queue, payload = self._message(batch_id) if wake else (keys.batch(batch_id), "")
        with redis_errors():
            reply = self._move(
                keys=[keys.batch(batch_id), queue],
                args=[" ".join(allowed), status, payload, *_encode(fields or {})],
            )
        return bool(reply == 1)

    def finish(
        self, batch_id: str, *, allowed: tuple[str, ...], status: str, fields: dict[str, Any]
    ) -> bool:
        """The batch's end, with the counts and files its finalizer wrote."""
        now = self._clock()
        with redis_errors():
            reply = self._finish(
                keys=[
                    keys.batch(batch_id),
                    keys.BATCHES_DUE,
                    keys.OUTBOX,
                    keys.batch_part(batch_id, keys.BATCH_JOBS_SUFFIX),
                    keys.batch_part(batch_id, keys.BATCH_REFUSED_SUFFIX),
                    keys.batch_part(batch_id, keys.BATCH_OPEN_SUFFIX),
                ],
                args=[
                    " ".join(allowed),
                    status,
                    self._ttl,
                    now,
                    batch_id,
                    *_encode({**fields, f"{status}_at": round(now, 3)}),
                ],
            )
        return bool(reply == 1)

    def refuse_line(
        self, batch_id: str, *, line: int, next_cursor: int, custom_id: str, error: dict[str, Any]
    ) -> bool:
        """Record a line that could not become a job, as failed in its place."""
        outcome = json.dumps({"custom_id": custom_id, "error": error}, separators=(",", ":"))
        with redis_errors():
            return bool(
                self._refuse_line(
                    keys=[
                        keys.batch(batch_id),
                        keys.batch_part(batch_id, keys.BATCH_JOBS_SUFFIX),
                        keys.batch_part(batch_id, keys.BATCH_REFUSED_SUFFIX),
                    ],
                    args=[line, next_cursor, outcome],
                )
            )

    def line_jobs(self, batch_id: str, start: int, count: int) -> list[str]:
        """Entries `start..start+count-1` of the batch's lines in line order: a job id, or
        `!<line>` for a refused line (`refused`)."""
        with redis_errors():
            raw = self._redis.lrange(
                keys.batch_part(batch_id, keys.BATCH_JOBS_SUFFIX), start, start + count - 1
            )
        return [i.decode() for i in cast(list[bytes], raw)]

    def refused(self, batch_id: str) -> dict[int, dict[str, Any]]:
        with redis_errors():
            raw = self._redis.hgetall(keys.batch_part(batch_id, keys.BATCH_REFUSED_SUFFIX))
        return {int(k): json.loads(v) for k, v in cast(dict[bytes, bytes], raw).items()}

    def open_jobs(self, batch_id: str) -> list[str]:
        """The batch's admitted lines whose jobs have not finished."""
        with redis_errors():
            raw = self._redis.smembers(keys.batch_part(batch_id, keys.BATCH_OPEN_SUFFIX))
        return sorted(i.decode() for i in cast(set[bytes], raw))

    def lock(self, batch_id: str, token: str) -> bool:
        """Become the one worker advancing the batch (and clear its `wake` flag)."""
        with redis_errors():
            return bool(
                self._lock(
                    keys=[keys.batch_part(batch_id, keys.BATCH_LOCK_SUFFIX), keys.batch(batch_id)],
                    args=[token, int(self.lock_seconds * 1000)],
                )
            )

    def renew_lock(self, batch_id: str, token: str) -> None:
        with redis_errors():
            self._renew_lock(
                keys=[keys.batch_part(batch_id, keys.BATCH_LOCK_SUFFIX)],
                args=[token, int(self.lock_seconds * 1000)],
            )

    def unlock(self, batch_id: str, token: str) -> bool:
        """Let go of the lock; True instead when the batch was woken meanwhile: the caller
        still holds it and advances the batch once more."""
        with redis_errors():
            return bool(
                self._unlock(
                    keys=[keys.batch_part(batch_id, keys.BATCH_LOCK_SUFFIX), keys.batch(batch_id)],
                    args=[token],
                )
            )

    def look_at(self, batch_id: str, when: float) -> None:
        """When the sweeper should next make sure the batch is being advanced."""
        with redis_errors():
            self._redis.zadd(keys.BATCHES_DUE, {batch_id: when}, xx=True)

    def claim_due(self, *, now: float, limit: int = 100) -> list[str]:
        """Unended batches due a look that nobody is advancing: their tasks are the
        caller's to queue (each is looked at again a lock's length from now)."""
        with redis_errors():
            ids = self._claim_due(
                keys=[keys.BATCHES_DUE],
                args=[
                    now,
                    now + self.lock_seconds,
                    limit,
                    keys.BATCH_PREFIX,
                    keys.BATCH_LOCK_SUFFIX,
                ],
            )
        return [i.decode() for i in ids]
