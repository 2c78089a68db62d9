"""The Celery application: configuration from settings, and the tasks.

Tasks are thin: they find this process's `Runtime`, call a pipeline step, and turn what the
step reports into Celery's vocabulary (chain to the next queue, retry with a countdown).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import redis
from celery import Celery, Task, signals

from visionq import images, logs, pipeline
from visionq.errors import Unavailable
from visionq.ops.durability import durability_warnings
from visionq.queues import (
    PREPARE_TASK,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_TASK,
    celery_config,
    check_broker_timing,
)
from visionq.settings import Settings
from workers.broker import TRANSPORT

log = logging.getLogger(__name__)
_runtimes: dict[int, pipeline.Runtime] = {}


def runtime(app: Celery) -> pipeline.Runtime:
    """One runtime per process, made after any fork so no connection is shared across one."""
    pid = os.getpid()
    if pid not in _runtimes:
        _runtimes[pid] = pipeline.Runtime.from_settings(app.conf.visionq_settings)
    return _runtimes[pid]


def create_celery(settings: Settings) -> Celery:
    config = celery_config(settings)
    check_broker_timing(config, settings)
    app = Celery("visionq")
    app.conf.update(config, broker_transport=TRANSPORT)
    app.conf.visionq_settings = settings

    @app.task(name=PREPARE_TASK, bind=True)
    def prepare(self: Task, job_id: str) -> None:
        if model := pipeline.prepare(job_id, runtime(self.app)):
            upstream.apply_async((model,), queue=UPSTREAM_QUEUE)

    @app.task(name=UPSTREAM_TASK, bind=True, max_retries=None)
    def upstream(self: Task, model: str) -> None:
        # A ticket: it serves the next job of `model` in fair order (visionq.pacing), and
        # comes back after a retry's delay for the job it offered again.
        if (retry_in := pipeline.call_upstream(model, runtime(self.app))) is not None:
            raise self.retry(countdown=retry_in)

    @app.task(name=WEBHOOK_TASK, bind=True)
    def webhook(self: Task, job_id: str, token: str) -> None:
        pipeline.deliver_webhook(job_id, token, runtime(self.app))

    @signals.setup_logging.connect(weak=False)
    def _logging(loglevel: int | None = None, **_: Any) -> None:
        # A receiver here tells Celery to leave logging alone: our JSON lines, at the level
        # the worker was started with.
        logs.configure(settings, level=loglevel or None)

    @signals.worker_ready.connect(weak=False)
    def _check_redis(**_: Any) -> None:
        client = redis.Redis.from_url(settings.redis_url)
        try:
            for warning in durability_warnings(client):
                log.warning("%s", warning)
        finally:
            client.close()

    @signals.worker_process_init.connect(weak=False)
    def _bound_memory(**_: Any) -> None:
        # In each prefork child (the prepare queue's): one image cannot take the host down.
        images.limit_memory(settings.prepare_memory_limit)

    @signals.task_received.connect(weak=False)
    def _received(request: Any = None, **_: Any) -> None:
        # In the worker's main process, as a message is taken from the broker.
        if request is not None and request.name == PREPARE_TASK and request.args:
            with contextlib.suppress(Unavailable):  # then the sweeper finds it unacknowledged
                runtime(app).leases.received(request.args[0])

    return app
