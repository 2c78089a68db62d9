"""The job's steps as plain functions of (job id, runtime), called by Celery tasks or tests.

Each step re-reads the record and checks the state first ("asserting the world is the
responsibility of the task"), so a message delivered twice is harmless: a finished or
canceled job is left alone, and the guarded transitions in `jobs` refuse a second finish.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from visionq import responses, tokens, webhooks
from visionq.errors import (
    ContextLengthExceeded,
    Internal,
    PayloadTooLarge,
    Unavailable,
    UpstreamError,
    UpstreamRetryable,
    UpstreamUnavailable,
    UrlRefused,
    VisionqError,
)
from visionq.media import fit, guards, images
from visionq.ops import logs, metrics
from visionq.retries import retry_delay, retry_reason
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state.jobs import request_body_name
from visionq.state.records import JobRecord
from visionq.upstream.body import write_body
from visionq.upstream.dialects import parse_result

log = logging.getLogger(__name__)
MAX_PREPARE_ATTEMPTS = 3


@contextmanager
def _holding(rt: Runtime, job_id: str) -> Iterator[None]:
    """Keep the job's lease alive while this process works on it."""
    rt.keeper.hold(job_id, lambda: rt.leases.renew(job_id))
    try:
        yield
    finally:
        rt.keeper.drop(job_id)


def _bind(record: JobRecord, attempt: int) -> None:
    """Name the job in every line logged until the step's `logs.context` ends."""
    logs.bind(
        job_id=record.id,
        tenant=record.tenant,
        attempt=attempt,
        request_id=record.fields.get("request_id"),
    )


def _fail(rt: Runtime, record: JobRecord, error: VisionqError) -> None:
    if rt.jobs.fail(record.id, error):
        _finished(record, "failed", error.type)


def _finished(record: JobRecord, status: str, error_type: str = "") -> None:
    """Count and log a finish this process made (a refused transition is someone else's)."""
    metrics.JOBS_FINISHED.labels(record.fields["model"], status, error_type).inc()
    log.info("job %s", status, extra={"status": status, "error_type": error_type or None})


def prepare(job_id: str, rt: Runtime) -> str | None:
    """Validate, count and encode every image and write the upstream body.

    Returns the model whose queue the job now waits in, for the caller to send the
    upstream stage a ticket; None when the job is finished (failed here, or canceled or
    finished before we got to it).
    """
    with logs.context(job_id=job_id, stage="prepare"):
        attempt = rt.leases.take(job_id, "prepare")
        if attempt is None:  # finished, prepared, or a live worker has it
            return None
        record = rt.jobs.load(job_id)
        if record is None:
            return None
        _bind(record, attempt)
        if attempt == 1:
            waited = time.time() - record.fields["created_at"]
            metrics.STAGE_SECONDS.labels("queue_wait").observe(max(0.0, waited))
        if attempt > MAX_PREPARE_ATTEMPTS:
            # Each earlier attempt's worker died holding it: an image that kills the worker
            # must end the job, not loop through the workers forever.
            _fail(
                rt, record, Internal(f"preparing this job stopped its worker {attempt - 1} times")
            )
            return None
        try:
            with _holding(rt, job_id), metrics.STAGE_SECONDS.labels("prepare").time():
                prepared = _prepare_job(record, rt)
        except Unavailable as exc:
            # The store is down, not the images bad: the sweeper queues the job again.
            look_in = exc.retry_after or rt.leases.lease
            rt.leases.release(job_id, look_in=look_in, uncount="prepare")
            log.warning("%s; preparing again in %g s", exc.message, look_in)
            return None
        except FileNotFoundError:
            # A fetched or fitted image that another job's removal took between our write
            # and our read (its reference is recorded only once prepared): the next try
            # stores it again. Counted, so an image lost for good fails the job in the end.
            rt.leases.release(job_id, look_in=rt.leases.lease)
            log.warning("an image was removed while it was prepared; preparing again")
            return None
        if prepared is None:
            return None
        model = record.fields["model"]
        rt.hand_on(job_id, model=model, tenant=record.tenant)
        image_tokens = sum(image["image_tokens"] for image in prepared)
        metrics.TOKENS.labels(model, "image_estimate").inc(image_tokens)
        log.info(
            "prepared %d images, %d image tokens",
            len(prepared),
            image_tokens,
            extra={"images": len(prepared), "image_tokens": image_tokens},
        )
        return model


def _prepare_job(record: JobRecord, rt: Runtime) -> list[dict[str, Any]] | None:
    """The job's prepared images; None when the job ended here or was not ours."""
    job_id = record.id
    try:
        # An outage of our store is handed back uncounted, again every few seconds while
        # it lasts: found here, in one quick call, each such try holds this process for
        # moments, not for an image URL's whole download (S3 is written only after it)
        # or for a hung S3's minutes of retried reads.
        rt.store.ping()
        if record.request_in_store:
            record = record.with_request(_stored_request(rt, job_id))
        prepared = [_prepare_image(rt, record, image) for image in record.images]
        input_tokens = _check_context(rt.settings, record, prepared)
        rt.store.write_body(
            job_id,
            lambda out: write_body(
                out,
                api=record.fields["api"],
                model=record.fields["model"],
                request=record.request,
                formats=[image["format"] for image in prepared],
                open_image=lambda n: rt.store.open_image(prepared[n]["sha256"]),
            ),
        )
    except (Unavailable, FileNotFoundError):
        raise
    except VisionqError as exc:
        _fail(rt, record, exc)
        return None
    except Exception:
        log.exception("prepare failed unexpectedly")
        _fail(rt, record, Internal("preparing the images failed unexpectedly"))
        return None
    if rt.jobs.save_images(job_id, prepared, input_tokens=input_tokens):
        return prepared
    # Refused: canceled while we worked (then nothing will send the body), or another
    # prepare of this job got there first (then its upstream call may be sending it).
    latest = rt.jobs.load(job_id)
    if latest is None or latest.finished:
        rt.store.delete_body(job_id)
    return None


def _prepare_image(rt: Runtime, record: JobRecord, image: dict[str, Any]) -> dict[str, Any]:
    settings = rt.settings
    original = image.get("blob")
    if original is None:
        stored = rt.fetcher.fetch(
            image["url"],
            lambda chunks: rt.store.put_image(chunks, max_bytes=settings.max_image_bytes),
        )
        original = stored.sha256
    blob = original
    with (
        rt.store.open_image(blob) as fp,
        guards.decode_deadline(settings.image_decode_timeout),
    ):
        # The header decides whether auto-fit applies; then one full decode either way:
        # fitting decodes the whole image too, so it is the validation as well.
        info = images.probe(fp, max_pixels=settings.max_image_pixels)
        size = fp.seek(0, 2)
        resized = False
        if record.request.get("resize", "auto") == "auto" and fit.fit_plan(
            info, byte_size=size, max_base64=settings.max_image_bytes
        ):
            data, info = fit.fit(
                fp,
                info,
                max_pixels=settings.max_image_pixels,
                max_base64=settings.max_image_bytes,
            )
            blob, size = (
                rt.store.put_image([data], max_bytes=settings.max_image_bytes).sha256,
                len(data),
            )
            resized = True
        else:
            fp.seek(0)
            info = images.validate(fp, max_pixels=settings.max_image_pixels)
    encoded = images.base64_length(size) + len(images.data_url_prefix(info.format))
    if encoded > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"image {image['index']} is {encoded} bytes as base64, over MiMo's "
            f"{settings.max_image_bytes}-byte limit"
        )
    return {
        **image,
        "blob": original,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "bytes": size,
        "sha256": blob,
        "image_tokens": info.tokens,
        "resized": resized,
    }


def _stored_request(rt: Runtime, job_id: str) -> dict[str, Any]:
    """A request too large for the job's hash, from the store (read once, by prepare).
    One that is gone or unreadable fails the job: no later try would find it."""
    try:
        body, _ = rt.store.open_body(request_body_name(job_id))
        with body:
            request: dict[str, Any] = json.load(body)
    except (FileNotFoundError, ValueError):
        raise Internal("the job's request is missing from the image store") from None
    return request


def _input_tokens(record: JobRecord) -> int:
    """The estimate prepare kept; a job prepared by a version that kept none (a rolling
    upgrade) has its request inline, so it is counted from that."""
    if "input_tokens" in record.fields:
        return int(record.fields["input_tokens"])
    image_tokens = sum(image["image_tokens"] for image in record.images)
    return tokens.input_tokens(record.request["messages"], image_tokens)


def _check_context(settings: Settings, record: JobRecord, prepared: list[dict[str, Any]]) -> int:
    """Refuse before paying for a call MiMo would refuse: images and text over the context.
    Returns the input's token estimate."""
    image_tokens = sum(image["image_tokens"] for image in prepared)
    estimate = tokens.input_tokens(record.request["messages"], image_tokens)
    window = settings.model_context.get(record.fields["model"])
    if window is not None and estimate > window:
        raise ContextLengthExceeded(
            f"the images and text need about {estimate} tokens; "
            f"{record.fields['model']} takes {window}"
        )
    return estimate


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
        _bind(record, turn.attempt)
        if turn.attempt > rt.settings.upstream_max_attempts:
            # Every earlier attempt ended with no outcome (its worker died, or it could not
            # read the body): a job that stops its workers must not be offered for ever,
            # each offer another paid call.
            error = UpstreamUnavailable(
                f"the upstream stage ended {turn.attempt - 1} times without an outcome"
            )
            _finish(rt, record, error=error)
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
        _fail(rt, record, Internal("the prepared request body is missing"))
        return None
    model = record.fields["model"]
    try:
        with body:
            raw = _timed_call(rt, record, body, length)
        result = parse_result(record.fields["api"], raw)
    except UpstreamRetryable as exc:
        if exc.upstream_status == 429:
            # Our pacing should have kept it away; someone else shares the account.
            rt.pacer.pause(model, exc.retry_after or 1.0)
        if attempt < rt.settings.upstream_max_attempts:
            retry_in = retry_delay(attempt, exc.retry_after)
            rt.hand_on(job_id, model=model, tenant=record.tenant, retry_in=retry_in)
            reason = retry_reason(exc.upstream_status)
            metrics.UPSTREAM_RETRIES.labels(model, reason).inc()
            log.info(
                "upstream retry in %.1f s (%s)",
                retry_in,
                reason,
                extra={"retry_in": round(retry_in, 3), "reason": reason},
            )
            return retry_in
        _finish(
            rt,
            record,
            error=UpstreamUnavailable(
                f"gave up after {attempt} attempts; last: {exc.message}",
                upstream_status=exc.upstream_status,
            ),
        )
        return None
    except VisionqError as exc:
        _finish(rt, record, error=exc)
        return None
    usage = result["usage"]
    for kind in ("prompt", "completion"):
        metrics.TOKENS.labels(model, kind).inc(int(usage.get(f"{kind}_tokens") or 0))
    _finish(rt, record, result=result)
    return None


def _timed_call(rt: Runtime, record: JobRecord, body: BinaryIO, length: int) -> dict[str, Any]:
    """One upstream call, counted and logged with its status and duration."""
    model = record.fields["model"]
    status = "error"
    started = time.monotonic()
    try:
        raw = rt.upstream.call(record.fields["api"], body, length)
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


def _finish(
    rt: Runtime,
    record: JobRecord,
    *,
    result: dict[str, Any] | None = None,
    error: VisionqError | None = None,
) -> None:
    job_id = record.id
    deadline = time.monotonic() + RESULT_WRITE_PATIENCE
    pause = 0.25
    while True:
        try:
            if error is not None:
                _fail(rt, record, error)
            else:
                assert result is not None
                if rt.jobs.succeed(job_id, result):
                    _finished(record, "succeeded")
            break
        except Unavailable:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("job %s: Redis is unreachable; holding its outcome", job_id)
            time.sleep(pause)
            pause = min(1.0, 2 * pause)
    rt.store.delete_body(job_id)


def deliver_webhook(job_id: str, token: str, rt: Runtime) -> None:
    """One attempt at a finished job's event, then the schedule's next step for it."""
    with logs.context(job_id=job_id, stage="webhook"):
        _deliver_webhook(job_id, token, rt)


#: A delivery's outcome for `visionq_webhook_deliveries_total`, from its new status.
_OUTCOMES = {"delivered": "delivered", "pending": "retry", "failed": "failed", "disabled": "failed"}


def _deliver_webhook(job_id: str, token: str, rt: Runtime) -> None:
    if not rt.outbox.begin(job_id, token, lease=rt.settings.webhook_lease):
        return  # a duplicate, or overtaken: the claim it carried is no longer current
    record = rt.jobs.load(job_id)
    state = record.fields.get("webhook") if record is not None else None
    if record is None or state is None or not record.finished or state["status"] != "pending":
        rt.outbox.done(job_id)
        return
    if rt.signer is None:
        # Left in the outbox: it comes due again once a worker with the secret takes it.
        log.error("cannot sign webhooks: VISIONQ_WEBHOOK_SECRET is not set on this worker")
        return
    body = webhooks.event_body(responses.job_object(record))
    now = time.time()
    headers = rt.signer.headers(webhooks.event_id(job_id), body, now=now)
    attempts = int(state.get("attempts") or 0) + 1
    _bind(record, attempts)
    started = time.monotonic()
    try:
        code = rt.webhook_fetcher.post(state["url"], body, headers)
        verdict = webhooks.judge(
            code, attempts=attempts, schedule=rt.settings.webhook_retry_schedule
        )
    except UrlRefused:
        code, verdict = None, webhooks.Verdict("disabled")
    elapsed = time.monotonic() - started
    metrics.STAGE_SECONDS.labels("webhook").observe(elapsed)
    metrics.WEBHOOK_DELIVERIES.labels(_OUTCOMES[verdict.status]).inc()
    log.info(
        "webhook answered %s in %.3f s: %s",
        code,
        elapsed,
        verdict.status,
        extra={"status_code": code, "duration": round(elapsed, 3), "outcome": verdict.status},
    )
    rt.outbox.settle(
        job_id,
        {**state, "status": verdict.status, "attempts": attempts, "last_status_code": code},
        next_due=None if verdict.retry_in is None else time.time() + verdict.retry_in,
    )
