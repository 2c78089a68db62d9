"""`visionq sweeper`: the periodic part of reliability.

Each round it queues the webhook deliveries that are due (outbox) and the stage of every
unfinished job whose lease ran out (its worker died, or its message was lost). Any number
may run, since claims are atomic, but one is enough: a couple of Redis calls a round.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis

from visionq.errors import Unavailable
from visionq.leases import Leases
from visionq.outbox import Outbox
from visionq.queues import (
    PREPARE_QUEUE,
    PREPARE_TASK,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
)
from visionq.settings import Settings
from workers.app import create_celery

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    app = create_celery(settings)
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    outbox = Outbox(client)
    leases = Leases(client, lease=settings.job_lease)
    stage_tasks = {
        "prepare": (PREPARE_TASK, PREPARE_QUEUE),
        "upstream": (UPSTREAM_TASK, UPSTREAM_QUEUE),
    }
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        try:
            for job_id in outbox.claim_due(now=time.time(), lease=settings.webhook_lease):
                app.send_task(WEBHOOK_TASK, args=[job_id], queue=WEBHOOK_QUEUE)
            for expired in leases.expired(queued_grace=settings.queued_grace):
                task, queue = stage_tasks[expired.stage]
                log.warning(
                    "job %s: its %s lease ran out; queued again", expired.job_id, expired.stage
                )
                app.send_task(task, args=[expired.job_id], queue=queue)
        except Unavailable:
            log.warning("Redis is unreachable; the sweeper tries again")
        stop.wait(settings.sweep_interval)
