"""Celery over Redis: the only module of the core that knows Celery's message envelope and
kombu's Redis layout.

Without importing either (the core may not): the prepare message is built by hand, the
configuration is a plain dict that `workers.app` gives Celery, and the keys read here are
kombu's defaults. tests/workers/test_enqueue.py checks the message against Celery's own and a
real worker, and tests/workers/test_sweeper.py the unacknowledged keys against a real kombu
consumer, so that an upgrade of either that moves them fails there.

kombu's Redis transport keeps a queue's messages of priority 0 in a list named after the
queue, and those of a priority p > 0 in `{queue}\\x06\\x16{p}` (its `sep` and
`priority_steps`). Every message of ours waits in the queue's own list but batch lines'
prepare messages, which wait in the lowest step's (`prepare_push`). A message a worker
has taken and not yet acknowledged (`acks_late`) is kept under its delivery tag in the
hash `unacked` and the sorted set `unacked_index` (scored by when it was taken), and is
given back to its queue after the visibility timeout.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any, cast
from urllib.parse import quote

import redis

from visionq.broker import (
    BATCH_TASK,
    PREPARE_QUEUE,
    PREPARE_TASK,
    QUEUES,
    SOFT_LIMIT_MARGIN,
    UPSTREAM_QUEUE,
    UPSTREAM_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    time_limits,
    upstream_time_limit,
)
from visionq.broker.celery_amqp import amqp_options, is_amqp
from visionq.broker.protocol import task_message
from visionq.retries import MAX_RETRY_DELAY
from visionq.settings import Settings
from visionq.state.connection import sentinel_url
from visionq.state.redis import redis_errors

_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
# kombu's `unacked_key` and `unacked_index_key` options, at their defaults.
_UNACKED, _UNACKED_INDEX = "unacked", "unacked_index"
_TASKS = {PREPARE_QUEUE: PREPARE_TASK, UPSTREAM_QUEUE: UPSTREAM_TASK, WEBHOOK_QUEUE: WEBHOOK_TASK}


def _lists(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS]


def _message(task: str, queue: str, args: list[str], priority: int) -> tuple[str, str]:
    """Celery's task protocol 2 (`task_message`) in kombu's Redis envelope: the body base64
    in JSON, with properties carrying the `delivery_tag` under which a worker keeps it
    unacknowledged until done, which `claim_stranded` reads; and the list of `queue` that
    kombu keeps messages of that priority in."""
    headers, body = task_message(task, args)
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": headers["id"],
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return _lists(queue)[_PRIORITY_STEPS.index(priority)], json.dumps(envelope)


class CeleryRedis:
    """The `visionq.broker.Broker` of Celery workers on kombu's Redis transport."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def prepare_push(self, job_id: str, *, behind: bool = False) -> tuple[str, str]:
        """What `send_task(PREPARE_TASK, args=[job_id])` would LPUSH, and to which list.

        Written by the intake in the job's own script rather than through Celery's
        publisher, which costs about 1 ms of CPU and a round trip of its own. `behind`
        gives it kombu's lowest priority step: a worker's BRPOP names a queue's lists in
        priority order, so it takes a batch line only when no other message waits (and
        kombu restores an unacknowledged one to the same list).
        """
        return _message(PREPARE_TASK, PREPARE_QUEUE, [job_id], _PRIORITY_STEPS[-1] if behind else 0)

    def batch_push(self, batch_id: str) -> tuple[str, str]:
        return _message(BATCH_TASK, PREPARE_QUEUE, [batch_id], 0)

    def waiting_list(self, queue: str) -> str:
        """kombu's list of `queue`'s messages of priority 0 (all but batch lines')."""
        return queue

    def waiting(self, queue: str) -> int:
        return self.queue_depths()[queue]

    def queue_depths(self) -> dict[str, int]:
        pipe = self._redis.pipeline(transaction=False)
        for queue in QUEUES:
            for key in _lists(queue):
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {queue: sum(next(lengths) for _ in _PRIORITY_STEPS) for queue in QUEUES}

    def relay(self, stop: threading.Event) -> None:
        return None

    def claim_stranded(self, queue: str, *, older_than: float) -> list[str]:
        """A worker fetches only for a free slot, so a live one starts a message within
        milliseconds; one still unacknowledged after `older_than` belongs to a dead worker
        or a dead connection, and kombu would give it back only after the visibility
        timeout. Each is taken out of kombu's unacknowledged keys, so that it is claimed
        once (by one sweeper) and never restored later as a duplicate."""
        client = self._redis
        with redis_errors():
            tags = cast(
                list[bytes],
                client.zrangebyscore(_UNACKED_INDEX, "-inf", time.time() - older_than),
            )
            raws = client.hmget(_UNACKED, tags) if tags else []
        stale: dict[bytes, str] = {}
        for tag, raw in zip(tags, raws, strict=True):
            if raw is None:
                continue
            message = json.loads(raw)[0]
            if message.get("headers", {}).get("task") == _TASKS[queue]:
                stale[tag] = json.loads(base64.b64decode(message["body"]))[0][0]
        if not stale:
            return []
        pipe = client.pipeline()
        for tag in stale:
            pipe.hdel(_UNACKED, tag)
            pipe.zrem(_UNACKED_INDEX, tag)
        with redis_errors():
            removed = pipe.execute()[::2]
        return [first for first, gone in zip(stale.values(), removed, strict=True) if gone]


def visibility_timeout(settings: Settings) -> int:
    """kombu re-delivers a message not acknowledged within this many seconds.

    It must outlast the longest task and the longest retry countdown (with the Redis
    transport a countdown is held unacknowledged by the worker), or a task still running
    would be delivered a second time; twice the longest, and at least an hour. A dead
    worker's job does not wait for it: our own lease (visionq.leases) brings it back
    within seconds.
    """
    longest = max(*time_limits(settings).values(), MAX_RETRY_DELAY)
    return max(3600, int(2 * longest))


def _broker_url(url: str) -> tuple[str, dict[str, Any]]:
    """kombu's spelling of our Redis URL: a Sentinel group is one `sentinel://` URL per
    sentinel, joined by `;`, with the master's name in the transport options."""
    found = sentinel_url(url)
    if found is None:
        return url, {}
    auth = f":{quote(found.password, safe='')}@" if found.password else ""
    hosts = ";".join(f"sentinel://{auth}{host}:{port}/{found.db}" for host, port in found.sentinels)
    options: dict[str, Any] = {"master_name": found.service}
    if found.sentinel_password:
        options["sentinel_kwargs"] = {"password": found.sentinel_password}
    return hosts, options


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings for the workers and the sweeper, which publishes with Celery.

    Together they make a crash lose nothing: a task is acknowledged only when done
    (`acks_late`), a pool child killed mid-task gives its message back
    (`task_reject_on_worker_lost`), a worker takes one message at a time per slot
    (prefetch 1, so a dead worker strands no backlog), and SIGTERM waits for running
    tasks up to the soft-shutdown timeout before handing the rest back. A worker fetches
    only when a slot is free, so a SIGKILL strands no message it had not started.
    """
    if settings.broker_url and is_amqp(settings.broker_url):
        broker: dict[str, Any] = {
            "broker_url": settings.broker_url,
            "broker_transport_options": {"confirm_publish": True},
            **amqp_options(),
        }
    else:
        broker_url, sentinel_options = _broker_url(settings.broker_url or settings.redis_url)
        broker = {
            "broker_url": broker_url,
            "broker_transport_options": {
                **sentinel_options,
                "visibility_timeout": visibility_timeout(settings),
                # Look for messages past their visibility timeout every 10 s (kombu >= 5.7).
                "unacked_restore_interval": 10,
                "unacked_restore_throttle": 1,
            },
        }
    return {
        **broker,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # The limit of a task that sets none on its decorator: the upstream call's, which
        # follows the configured upstream timeouts (workers.tasks).
        "task_time_limit": upstream_time_limit(settings),
        "task_soft_time_limit": upstream_time_limit(settings) - SOFT_LIMIT_MARGIN,
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
        # Routes rather than a `queue` on each task's decorator, which Celery 5.7 deprecates.
        "task_routes": {
            PREPARE_TASK: {"queue": PREPARE_QUEUE},
            BATCH_TASK: {"queue": PREPARE_QUEUE},
            UPSTREAM_TASK: {"queue": UPSTREAM_QUEUE},
            WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }
