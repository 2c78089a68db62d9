"""Task names, queues and the broker options both sides of the queue must agree on.

The intake (`service`) sends by task name and never imports `workers`; the workers
register tasks under the same names. The configuration is a plain dict so that this core
module needs no Celery import.
"""

from __future__ import annotations

from typing import Any

from visionq.settings import Settings

PREPARE_QUEUE = "prepare"
UPSTREAM_QUEUE = "upstream"
WEBHOOK_QUEUE = "webhooks"
QUEUES = (PREPARE_QUEUE, UPSTREAM_QUEUE, WEBHOOK_QUEUE)

PREPARE_TASK = "visionq.prepare"
UPSTREAM_TASK = "visionq.upstream"
WEBHOOK_TASK = "visionq.webhook"

#: Pool per queue, chosen by measurement: prepare is CPU-bound (decode, encode) and wants
#: processes; upstream waits on the network for minutes and wants many cheap threads (here
#: a threads pool ran a 0.2 s I/O task at about twice the rate of gevent).
POOLS = {PREPARE_QUEUE: "prefork", UPSTREAM_QUEUE: "threads", WEBHOOK_QUEUE: "threads"}
DEFAULT_CONCURRENCY = {PREPARE_QUEUE: 2, UPSTREAM_QUEUE: 64, WEBHOOK_QUEUE: 16}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the producer (API) and the consumers (workers)."""
    # The broker re-delivers a message not acknowledged within the visibility timeout; it
    # must outlast the longest task (an upstream call of `upstream_timeout`) with margin.
    visibility = max(3600, int(settings.upstream_timeout * 2) + 600)
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": visibility},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": PREPARE_QUEUE,
        "task_routes": {
            PREPARE_TASK: {"queue": PREPARE_QUEUE},
            UPSTREAM_TASK: {"queue": UPSTREAM_QUEUE},
            WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }
