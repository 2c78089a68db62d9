"""What every step does with a job it works on: name it in the logs, hold its lease, and
fail it or count its finish. Shared by the three steps of this package."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from visionq.errors import VisionqError
from visionq.ops import logs, metrics
from visionq.runtime import Runtime
from visionq.state.pacing import Lane
from visionq.state.records import JobRecord

log = logging.getLogger("visionq.pipeline")


@contextmanager
def holding_lease(rt: Runtime, job_id: str) -> Iterator[None]:
    """Keep the job's lease alive while this process works on it."""
    rt.keeper.hold(job_id, lambda: rt.leases.renew(job_id))
    try:
        yield
    finally:
        rt.keeper.drop(job_id)


def lane_of(record: JobRecord) -> Lane:
    """The pacer's lane of a job: a batch line of priority `batch` waits behind the rest."""
    return "batch" if record.fields.get("lane") == "batch" else "interactive"


def bind_job(record: JobRecord, attempt: int) -> None:
    """Name the job in every line logged until the step's `logs.context` ends."""
    logs.bind(
        job_id=record.id,
        tenant=record.tenant,
        attempt=attempt,
        request_id=record.fields.get("request_id"),
    )


def fail_job(
    rt: Runtime, record: JobRecord, error: VisionqError, *, account: str | None = None
) -> None:
    """Fail the job with `error`, and count and log it if this call is what failed it."""
    if rt.jobs.fail(record.id, error, account=account):
        count_finish(record, "failed", error.type)


def miss_deadline(rt: Runtime, record: JobRecord) -> bool:
    """End the job this worker holds if its deadline has passed (`canceled`,
    `deadline_exceeded`): no work is started for it, no call made. Whether it did."""
    deadline = record.fields.get("deadline")
    if deadline is None or time.time() < deadline:
        return False
    if rt.jobs.miss_deadline(record.id):
        count_finish(record, "canceled", "deadline_exceeded")
    return True


def count_finish(record: JobRecord, status: str, error_type: str = "") -> None:
    """Count and log a finish this process made (a refused transition is someone else's)."""
    metrics.JOBS_FINISHED.labels(record.model, status, error_type).inc()
    log.info("job %s", status, extra={"status": status, "error_type": error_type or None})
