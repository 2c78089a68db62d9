"""The four tasks, each a few lines: find this process's `Runtime`, call a pipeline step,
and turn what the step reports into Celery's vocabulary (chain to the next queue, retry
with a countdown).

`shared_task` registers them with every app `create_celery` makes, under the stable names
of the broker contract, so that the intake and the sweeper can send them by name without
importing this module. Each carries its own time limits; the upstream call's limit follows
the configured upstream timeouts, so it is the app's default, set from the settings in
`visionq.broker.celery_redis.celery_config`, which also routes each task to its queue.
"""

from __future__ import annotations

import os

from celery import Celery, Task, shared_task

from visionq import pipeline
from visionq.broker import (
    BATCH_TASK,
    BATCH_TIME_LIMIT,
    PREPARE_TASK,
    PREPARE_TIME_LIMIT,
    SOFT_LIMIT_MARGIN,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_TASK,
    WEBHOOK_TIME_LIMIT,
)
from visionq.runtime import Runtime

_runtimes: dict[int, Runtime] = {}


def runtime(app: Celery) -> Runtime:
    """One runtime per process, made after any fork so no connection is shared across one."""
    pid = os.getpid()
    if pid not in _runtimes:
        _runtimes[pid] = Runtime.from_settings(app.conf.visionq_settings)
    return _runtimes[pid]


@shared_task(
    name=PREPARE_TASK,
    bind=True,
    time_limit=PREPARE_TIME_LIMIT,
    soft_time_limit=PREPARE_TIME_LIMIT - SOFT_LIMIT_MARGIN,
)
def prepare(self: Task, job_id: str) -> None:
    if model := pipeline.prepare(job_id, runtime(self.app)):
        self.app.tasks[UPSTREAM_TASK].apply_async((model,), queue=UPSTREAM_QUEUE)


@shared_task(name=UPSTREAM_TASK, bind=True, max_retries=None)
def upstream(self: Task, model: str) -> None:
    # A ticket: it serves whichever job of `model` is next in fair order (visionq.pacing).
    # When that job is to be tried again later, the ticket comes back after the delay.
    if (retry_in := pipeline.call_upstream(model, runtime(self.app))) is not None:
        raise self.retry(countdown=retry_in)


@shared_task(
    name=WEBHOOK_TASK,
    bind=True,
    time_limit=WEBHOOK_TIME_LIMIT,
    soft_time_limit=WEBHOOK_TIME_LIMIT - SOFT_LIMIT_MARGIN,
)
def webhook(self: Task, job_id: str, token: str) -> None:
    pipeline.deliver_webhook(job_id, token, runtime(self.app))


@shared_task(
    name=BATCH_TASK,
    bind=True,
    time_limit=BATCH_TIME_LIMIT,
    soft_time_limit=BATCH_TIME_LIMIT - SOFT_LIMIT_MARGIN,
)
def batch(self: Task, batch_id: str) -> None:
    # Whatever the batch needs now: validation, admitting lines, or its end.
    pipeline.advance_batch(batch_id, runtime(self.app))
