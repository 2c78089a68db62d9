"""The upstream step: one ticket's turn in the shared budget, one call to MiMo for the next
job in fair order, and the job's outcome or its retry (I/O-bound, on threads)."""

from __future__ import annotations

import logging
import time
from typing import Any, BinaryIO

from visionq import tokens
from visionq.errors import (
    Internal,
    Unavailable,
    UpstreamError,
    UpstreamRetryable,
    UpstreamUnavailable,
    VisionqError,
)
from visionq.models import StoredResult
from visionq.ops import logs, metrics
from visionq.pipeline.outcomes import bind_job, count_finish, fail_job, lane_of
from visionq.retries import retry_delay, retry_reason
from visionq.runtime import Runtime
from visionq.state.records import JobRecord
from visionq.upstream.dialects import parse_result

log = logging.getLogger("visionq.pipeline")


def _input_tokens(record: JobRecord) -> int:
    """The estimate prepare kept; a job prepared by a version that kept none (a rolling
    upgrade) has its request inline, so it is counted from that."""
    if "input_tokens" in record.fields:
        return int(record.fields["input_tokens"])
    image_tokens = sum(image["image_tokens"] for image in record.images)
    return tokens.input_tokens(record.request["messages"], image_tokens)


def call_upstream(model: str, rt: Runtime) -> float | None:
    """One ticket of `model`'s upstream stage: wait for room in the shared budget, then make
    one attempt for the next job in fair order (not necessarily the one that sent the
    ticket). Returns in how many seconds the ticket should come back, for the job it
    offered again to be retried; None when the ticket is done."""
    with logs.context(stage="upstream"), rt.pacer.turn(model) as turn:
        if turn is None:  # no job due: an earlier ticket took this one's job
            return None
        logs.bind(job_id=turn.job_id, attempt=turn.attempt)
        record = rt.jobs.load(turn.job_id)
        if record is None:
            return None
        bind_job(record, turn.attempt)
        if turn.attempt > rt.settings.upstream_max_attempts:
            # Every earlier attempt ended with no outcome (its worker died, or it could not
            # read the body): a job that stops its workers must not be offered for ever,
            # each offer another paid call.
            error = UpstreamUnavailable(
                f"the upstream stage ended {turn.attempt - 1} times without an outcome"
            )
            _record_outcome(rt, record, error)
            return None
        rt.pacer.spend_tokens(model, _input_tokens(record))
        waited = time.time() - turn.ready_since
        metrics.STAGE_SECONDS.labels("pacing_wait").observe(max(0.0, waited))
        return _call_upstream(rt, record, turn.attempt)


def _call_upstream(rt: Runtime, record: JobRecord, attempt: int) -> float | None:
    job_id = record.id
    try:
        body, length = rt.store.open_body(job_id)
    except FileNotFoundError:
        fail_job(rt, record, Internal("the prepared request body is missing"))
        return None
    model = record.model
    try:
        with body:
            raw = _timed_call(rt, record, body, length)
        result = parse_result(record.api, raw)
    except UpstreamRetryable as exc:
        if exc.upstream_status == 429:
            # Our pacing should have kept it away; someone else shares the account.
            rt.pacer.pause(model, exc.retry_after or 1.0)
        if attempt < rt.settings.upstream_max_attempts:
            retry_in = retry_delay(attempt, exc.retry_after)
            rt.hand_on(
                job_id, model=model, tenant=record.tenant, retry_in=retry_in, lane=lane_of(record)
            )
            reason = retry_reason(exc.upstream_status)
            metrics.UPSTREAM_RETRIES.labels(model, reason).inc()
            log.info(
                "upstream retry in %.1f s (%s)",
                retry_in,
                reason,
                extra={"retry_in": round(retry_in, 3), "reason": reason},
            )
            return retry_in
        _record_outcome(
            rt,
            record,
            UpstreamUnavailable(
                f"gave up after {attempt} attempts; last: {exc.message}",
                upstream_status=exc.upstream_status,
            ),
        )
        return None
    except VisionqError as exc:
        _record_outcome(rt, record, exc)
        return None
    usage = result["usage"]
    for kind in ("prompt", "completion"):
        metrics.TOKENS.labels(model, kind).inc(int(usage.get(f"{kind}_tokens") or 0))
    _record_outcome(rt, record, result)
    return None


def _timed_call(rt: Runtime, record: JobRecord, body: BinaryIO, length: int) -> dict[str, Any]:
    """One upstream call, counted and logged with its status and duration."""
    model = record.model
    status = "error"
    started = time.monotonic()
    try:
        raw = rt.upstream.call(record.api, body, length)
        status = "200"
        return raw
    except UpstreamError as exc:
        if exc.upstream_status is not None:
            status = str(exc.upstream_status)
        raise
    finally:
        elapsed = time.monotonic() - started
        metrics.STAGE_SECONDS.labels("upstream").observe(elapsed)
        metrics.UPSTREAM_CALLS.labels(model, status).inc()
        if status == "429":
            metrics.UPSTREAM_RATE_LIMITED.labels(model).inc()
        log.info(
            "upstream answered %s in %.3f s",
            status,
            elapsed,
            extra={"upstream_status": status, "duration": round(elapsed, 3)},
        )


#: How long a worker holding the upstream's answer keeps trying to record it while Redis
#: is unreachable. The answer is paid for; dropping it means the job's lease runs out and
#: the upstream is asked again.
RESULT_WRITE_PATIENCE = 60.0


def _record_outcome(rt: Runtime, record: JobRecord, outcome: StoredResult | VisionqError) -> None:
    """Finish the job with the call's result or error, then delete its upstream body.

    A result has been paid for, so while Redis is unreachable the write is tried again
    for up to RESULT_WRITE_PATIENCE before this gives up (and the lease brings the job
    back).
    """
    job_id = record.id
    deadline = time.monotonic() + RESULT_WRITE_PATIENCE
    pause = 0.25
    while True:
        try:
            if isinstance(outcome, VisionqError):
                fail_job(rt, record, outcome)
            elif rt.jobs.succeed(job_id, outcome):
                count_finish(record, "succeeded")
            break
        except Unavailable:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("job %s: Redis is unreachable; holding its outcome", job_id)
            time.sleep(pause)
            pause = min(1.0, 2 * pause)
    rt.store.delete_body(job_id)
