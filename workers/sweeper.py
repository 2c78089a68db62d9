"""`visionq sweeper`: moves webhook events that are due from the outbox onto the queue.

Any number may run (claims are atomic), but one is enough; it does a Redis round trip a
second and nothing else.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis

from visionq.errors import Unavailable
from visionq.outbox import Outbox
from visionq.queues import WEBHOOK_QUEUE, WEBHOOK_TASK
from visionq.settings import Settings
from workers.app import create_celery

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    app = create_celery(settings)
    outbox = Outbox(redis.Redis.from_url(settings.redis_url, health_check_interval=30))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        try:
            for job_id in outbox.claim_due(now=time.time(), lease=settings.webhook_lease):
                app.send_task(WEBHOOK_TASK, args=[job_id], queue=WEBHOOK_QUEUE)
        except Unavailable:
            log.warning("Redis is unreachable; the sweeper tries again")
        stop.wait(settings.sweep_interval)
