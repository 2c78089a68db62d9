"""The upstream step: one ticket's turn in the shared budget, one call to MiMo for the next
job in fair order, and the job's outcome or its retry (I/O-bound, on threads)."""

from __future__ import annotations

import logging
import time
from typing import Any, BinaryIO

from visionq import tokens
from visionq.accounts import Account
from visionq.errors import (
    InsufficientBalance,
    Internal,
    QuotaExceeded,
    Unavailable,
    UpstreamAuth,
    UpstreamError,
    UpstreamRetryable,
    UpstreamUnavailable,
    VisionqError,
)
from visionq.models import StoredResult
from visionq.ops import logs, metrics
from visionq.pipeline.outcomes import bind_job, count_finish, fail_job, lane_of, miss_deadline
from visionq.retries import retry_delay, retry_reason
from visionq.runtime import Runtime
from visionq.state.pacing import Fault, Turn
from visionq.state.records import JobRecord
from visionq.upstream.dialects import parse_result

log = logging.getLogger("visionq.pipeline")

#: Seconds an account whose 402 may have been a burst (MiMo's issue #99) stays out of
#: rotation before its probe, and for how long it then has half the calls in flight.
SUSPECTED_FUNDS_BENCH = 2.0
LOWERED_CONCURRENCY_SECONDS = 60


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
        logs.bind(job_id=turn.job_id, attempt=turn.attempt, account=turn.account)
        record = turn.record
        bind_job(record, turn.attempt)
        if turn.refused is not None:
            _record_outcome(rt, record, _refusal(turn.refused, turn.refused_status))
            return None
        if miss_deadline(rt, record):
            return None
        if turn.attempt > rt.settings.upstream_max_attempts:
            # Every earlier attempt ended with no outcome (its worker died, or it could not
            # read the body): a job that stops its workers must not be offered for ever,
            # each offer another paid call.
            error = UpstreamUnavailable(
                f"the upstream stage ended {turn.attempt - 1} times without an outcome"
            )
            _record_outcome(rt, record, error)
            return None
        estimate = _input_tokens(record)
        rt.pacer.spend_tokens(model, turn.account, estimate)
        if miss_deadline(rt, record):  # it passed while the tokens budget was waited for
            return None
        waited = time.time() - turn.ready_since
        metrics.STAGE_SECONDS.labels("pacing_wait").observe(max(0.0, waited))
        # The quota again, now that the call is about to be paid for: a backlog queued
        # before it was spent must not overrun it. Its input's estimate is held until the
        # finish has counted what the call used.
        hold = rt.settings.upstream_timeout + rt.settings.upstream_connect_timeout
        held = estimate + _output_cap(record)
        try:
            rt.quotas.hold(record.tenant, record.id, held, now=time.time(), lease=hold)
        except QuotaExceeded as exc:
            _record_outcome(rt, record, exc)
            return None
        try:
            return _call_upstream(rt, record, turn)
        finally:
            rt.quotas.release(record.tenant, record.id, held, now=time.time())


def _output_cap(record: JobRecord) -> int:
    """The answer's `max_completion_tokens`, when the request carries one (a request kept
    in the store, a large one, is not read here: its answer is not held for)."""
    if record.request_in_store:
        return 0
    return int(record.request.get("max_completion_tokens") or 0)


def _refusal(reason: str, status: int | None) -> VisionqError:
    """Why no account could take the job, as the error it fails with (with the status the
    account last answered)."""
    if reason == "funds":
        return InsufficientBalance(
            "every upstream account that serves this tenant is out of funds "
            "(MiMo answered 402, and again to a probe)",
            upstream_status=status,
        )
    if reason == "auth":
        return UpstreamAuth(
            "every upstream account that serves this tenant was refused by MiMo (401/403); "
            "check the keys",
            upstream_status=status,
        )
    return UpstreamAuth("no upstream account serves this tenant (VISIONQ_UPSTREAM_ACCOUNTS)")


def _call_upstream(rt: Runtime, record: JobRecord, turn: Turn) -> float | None:
    job_id, attempt = record.id, turn.attempt
    account = rt.accounts.get(turn.account)
    try:
        body, length = rt.store.open_body(job_id)
    except FileNotFoundError:
        fail_job(rt, record, Internal("the prepared request body is missing"))
        return None
    model = record.model
    try:
        with body:
            raw = _timed_call(rt, record, account, body, length)
        result = parse_result(record.api, raw)
    except (UpstreamAuth, InsufficientBalance) as exc:
        return _account_fault(rt, record, turn, exc)
    except UpstreamRetryable as exc:
        if turn.probe:  # no answer about the key: the next call probes instead
            rt.pacer.probe_again(account.name)
        if exc.upstream_status == 429:
            # Our pacing should have kept it away; someone else shares the account.
            rt.pacer.pause(model, account.name, exc.retry_after or 1.0)
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
        _probe_answered(rt, turn)
        _record_outcome(rt, record, exc, account=account.name)
        return None
    _probe_answered(rt, turn)
    usage = result["usage"]
    tenant = metrics.tenant_label(record.tenant, rt.settings.tenants)
    for kind in ("prompt", "completion"):
        count = int(usage.get(f"{kind}_tokens") or 0)
        metrics.TOKENS.labels(model, kind).inc(count)
        metrics.ACCOUNT_TOKENS.labels(account.name, model, kind).inc(count)
        metrics.TENANT_TOKENS.labels(tenant, kind).inc(count)
    _record_outcome(rt, record, result, account=account.name)
    return None


def _account_fault(
    rt: Runtime, record: JobRecord, turn: Turn, exc: UpstreamAuth | InsufficientBalance
) -> float | None:
    """The account, not the job, is at fault: take it out of rotation, and offer the job
    again without counting the attempt, so that the pacer sends it to another account of
    its tenant, or refuses it when every one of them has a confirmed fault (`_refusal`).
    A tenant with no other account gets the answer itself when the fault is confirmed.

    A 401/403 is a fault of the key at once. A 402 may be MiMo's answer to a burst of
    concurrent calls (its issue #99): the account is out for a moment, with half the
    calls in flight for a minute, and only a probe that gets 402 again confirms it.
    """
    name, model = turn.account, record.model
    fault: Fault
    if isinstance(exc, UpstreamAuth):
        fault, reason, confirmed = "auth", "auth", True
    elif turn.probe:
        fault, reason, confirmed = "funds", "funds", True
    else:
        fault, reason, confirmed = "funds", "funds_suspected", False
        rt.pacer.lower_concurrency(model, name, seconds=LOWERED_CONCURRENCY_SECONDS)
    seconds = rt.settings.account_probe_interval if confirmed else SUSPECTED_FUNDS_BENCH
    status = exc.upstream_status or 0
    rt.pacer.bench(name, fault, confirmed=confirmed, seconds=seconds, status=status)
    metrics.ACCOUNT_BENCHED.labels(name, reason).inc()
    alone = rt.accounts.serving(record.tenant) == [name]
    log.warning(
        "upstream account %s answered %s: out of rotation for %.0f s (%s)",
        name,
        status,
        seconds,
        reason,
        extra={"upstream_status": status, "reason": reason},
    )
    if confirmed and alone:
        _record_outcome(rt, record, exc, account=name)
        return None
    rt.hand_on(record.id, model=model, tenant=record.tenant, lane=lane_of(record), uncounted=True)
    return 0.0


def _probe_answered(rt: Runtime, turn: Turn) -> None:
    """The account a probe went to answered as an account in order does (a result, or a
    refusal of the job rather than of the key): it is back in rotation."""
    if turn.probe:
        rt.pacer.restore(turn.account)
        log.warning("upstream account %s answered its probe: back in rotation", turn.account)


def _timed_call(
    rt: Runtime, record: JobRecord, account: Account, body: BinaryIO, length: int
) -> dict[str, Any]:
    """One upstream call, counted and logged with its status and duration."""
    model = record.model
    status = "error"
    started = time.monotonic()
    try:
        raw = rt.upstream.call(account, record.api, body, length)
        status = "200"
        return raw
    except UpstreamError as exc:
        if exc.upstream_status is not None:
            status = str(exc.upstream_status)
        raise
    finally:
        elapsed = time.monotonic() - started
        metrics.STAGE_SECONDS.labels("upstream").observe(elapsed)
        metrics.UPSTREAM_CALLS.labels(model, account.name, status).inc()
        if status == "429":
            metrics.UPSTREAM_RATE_LIMITED.labels(model, account.name).inc()
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


def _record_outcome(
    rt: Runtime,
    record: JobRecord,
    outcome: StoredResult | VisionqError,
    *,
    account: str | None = None,
) -> None:
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
                fail_job(rt, record, outcome, account=account)
            elif rt.jobs.succeed(
                job_id,
                outcome,
                account=account,
                price=rt.settings.prices.get(record.model),
                image_tokens=sum(int(i.get("image_tokens") or 0) for i in record.images),
            ):
                count_finish(record, "succeeded")
            break
        except Unavailable:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("job %s: Redis is unreachable; holding its outcome", job_id)
            time.sleep(pause)
            pause = min(1.0, 2 * pause)
    rt.store.delete_body(job_id)
