"""Task names, queues and the broker options both sides of the queue must agree on.

The intake (`service`) sends by task name and never imports `workers`; the workers
register tasks under the same names. The configuration is a plain dict so that this core
module needs no Celery import.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import uuid
from typing import Any

from visionq.errors import ConfigurationError
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


#: kombu's Redis transport keeps a queue's priority-0 messages in a list named after the
#: queue itself; only priorities above 0 get a sub-queue (`<queue>\x06\x16<priority>`). We
#: send no priority, so a message for `prepare` goes to the list `prepare`.
PREPARE_LIST = PREPARE_QUEUE


@functools.cache
def _origin() -> str:
    return f"visionq-intake-{os.getpid()}@{socket.gethostname()}"


def prepare_message(job_id: str) -> tuple[str, str]:
    """The list and the payload that `send_task(PREPARE_TASK, args=[job_id])` would LPUSH.

    Built here so that the intake can push it in the same Redis transaction as the job
    record (one round trip, and the job exists exactly when its message does) instead of
    through Celery's publisher, which costs about 1 ms of CPU and a round trip of its own.
    It is what kombu's Redis transport stores: Celery's task protocol 2 (headers, body
    `[args, kwargs, embed]`), the body base64 in a JSON envelope, and properties carrying
    the `delivery_tag` under which a worker keeps it unacknowledged until done
    (`acks_late`), which is also what `workers.sweeper.claim_stranded_prepares` reads.
    tests/unit/test_enqueue.py checks it against Celery's own message and a real worker.
    """
    task_id = str(uuid.uuid4())
    body = [[job_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    headers: dict[str, Any] = {
        "lang": "py",
        "task": PREPARE_TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr([job_id]),
        "kwargsrepr": "{}",
        "origin": _origin(),
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": PREPARE_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return PREPARE_LIST, json.dumps(envelope)


#: The longest a retry's countdown may be, whatever the upstream's Retry-After says.
MAX_RETRY_DELAY = 600.0


def time_limits(settings: Settings) -> dict[str, int]:
    """Hard time limit per task: past it the pool kills the task (and a prefork child)."""
    return {
        PREPARE_TASK: 300,
        UPSTREAM_TASK: int(settings.upstream_connect_timeout + settings.upstream_timeout) + 60,
        WEBHOOK_TASK: 60,
    }


def visibility_timeout(settings: Settings) -> int:
    """The broker re-delivers a message not acknowledged within this many seconds.

    It must outlast the longest task and the longest retry countdown (with the Redis
    transport a countdown is held unacknowledged by the worker), or a task still running
    would be delivered a second time. A dead worker's job does not wait for it: our own
    lease (visionq.leases) brings it back within seconds.
    """
    longest = max(*time_limits(settings).values(), MAX_RETRY_DELAY)
    return max(3600, int(2 * longest))


def check_broker_timing(config: dict[str, Any], settings: Settings) -> None:
    """Refuse to start with a visibility timeout that would re-deliver running tasks."""
    visibility = config["broker_transport_options"]["visibility_timeout"]
    longest = max(*time_limits(settings).values(), MAX_RETRY_DELAY)
    if visibility <= longest:
        raise ConfigurationError(
            f"the broker visibility timeout ({visibility} s) must be longer than the longest "
            f"task or retry countdown ({longest:.0f} s)"
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the producer (API) and the consumers (workers).

    Together they make a crash lose nothing: a task is acknowledged only when done
    (`acks_late`), a pool child killed mid-task gives its message back
    (`task_reject_on_worker_lost`), a worker takes one message at a time per slot
    (prefetch 1, so a dead worker strands no backlog), and SIGTERM waits for running
    tasks up to the soft-shutdown timeout before handing the rest back. A worker fetches
    only when a slot is free, so a SIGKILL strands no message it had not started.
    """
    limits = time_limits(settings)
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout(settings),
            # Look for messages past their visibility timeout every 10 s (kombu >= 5.7).
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        },
        "task_annotations": {
            name: {"time_limit": limit, "soft_time_limit": limit - 10}
            for name, limit in limits.items()
        },
        # Fetch only for a free slot: a message reserved by a worker that then dies waits
        # for the broker's visibility timeout, while one still in the queue does not.
        "worker_disable_prefetch": True,
        "worker_soft_shutdown_timeout": 30,
        "worker_enable_soft_shutdown_on_idle": True,
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
