"""The webhook step: one signed attempt at a finished job's event, then the schedule's
next step for it (I/O-bound, on threads)."""

from __future__ import annotations

import logging
import time

from visionq import batch_objects, responses, webhooks
from visionq.batch_objects import anthropic_results_path
from visionq.errors import UrlRefused
from visionq.ops import logs, metrics
from visionq.pipeline.outcomes import bind_job
from visionq.runtime import Runtime
from visionq.state.records import WebhookRecord

log = logging.getLogger("visionq.pipeline")


def deliver_webhook(job_id: str, token: str, rt: Runtime) -> None:
    """One attempt at a finished job's (or an ended batch's) event, then the schedule's
    next step for it."""
    with logs.context(job_id=job_id, stage="webhook"):
        _deliver_webhook(job_id, token, rt)


#: A delivery's outcome for `visionq_webhook_deliveries_total`, from its new status.
_OUTCOMES = {"delivered": "delivered", "pending": "retry", "failed": "failed", "disabled": "failed"}


def _event(job_id: str, rt: Runtime) -> tuple[WebhookRecord, bytes] | None:
    """The delivery state and the event body of a finished job, or of an ended batch (its
    id says which); None when there is nothing (more) to deliver."""
    if job_id.startswith("batch_"):
        batch = rt.batches.load(job_id)
        state = batch.fields.get("webhook") if batch is not None else None
        if batch is None or state is None or not batch.ended or state["status"] != "pending":
            return None
        data = (
            batch_objects.anthropic_batch(batch, results_url=anthropic_results_path(batch.id))
            if batch.fields["api"] == "anthropic"
            else batch_objects.openai_batch(batch)
        )
        logs.bind(tenant=batch.tenant, attempt=int(state.get("attempts") or 0) + 1)
        return state, batch_objects.batch_event(batch, data)
    record = rt.jobs.load(job_id)
    state = record.fields.get("webhook") if record is not None else None
    if record is None or state is None or not record.finished or state["status"] != "pending":
        return None
    bind_job(record, int(state.get("attempts") or 0) + 1)
    return state, webhooks.event_body(responses.job_object(record))


def _deliver_webhook(job_id: str, token: str, rt: Runtime) -> None:
    if not rt.outbox.begin(job_id, token, lease=rt.settings.webhook_lease):
        return  # a duplicate, or overtaken: the claim it carried is no longer current
    event = _event(job_id, rt)
    if event is None:
        rt.outbox.done(job_id)
        return
    if rt.signer is None:
        # Left in the outbox: it comes due again once a worker with the secret takes it.
        log.error("cannot sign webhooks: VISIONQ_WEBHOOK_SECRET is not set on this worker")
        return
    state, body = event
    now = time.time()
    headers = rt.signer.headers(webhooks.event_id(job_id), body, now=now)
    attempts = int(state.get("attempts") or 0) + 1
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
