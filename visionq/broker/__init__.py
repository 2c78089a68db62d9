"""The broker contract: the queues, the task names, and what the core asks of the broker.

Three kinds of process use the queues. The API enqueues the first stage of each job, the
workers consume the three queues, and the sweeper sends again what was lost. They agree on
the names below. Everything else about the broker belongs to one implementation in this
package: how a message is laid out, where it waits, and how to find a message that a
worker took but never acknowledged.

The core sees the broker only through the `Broker` protocol, and `visionq.runtime` picks
the implementation: `celery_redis` (the default), or `celery_amqp` when
`VISIONQ_BROKER_URL` names RabbitMQ. Scripts queue a job's first message in the step that
writes the job (`prepare_push`): into kombu's list itself on Redis, into a relay list
that `Broker.relay` carries on to RabbitMQ otherwise.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from visionq.settings import Settings

PREPARE_QUEUE = "prepare"
UPSTREAM_QUEUE = "upstream"
WEBHOOK_QUEUE = "webhooks"
QUEUES = (PREPARE_QUEUE, UPSTREAM_QUEUE, WEBHOOK_QUEUE)

PREPARE_TASK = "visionq.prepare"
UPSTREAM_TASK = "visionq.upstream"
WEBHOOK_TASK = "visionq.webhook"
#: Advances one batch (validates it, admits lines, ends it); CPU-bound like prepare, and
#: on its queue.
BATCH_TASK = "visionq.batch"

#: Pool per queue, chosen by measurement: prepare is CPU-bound (decode, encode) and wants
#: processes; upstream waits on the network for minutes and wants many cheap threads (here
#: a threads pool ran a 0.2 s I/O task at about twice the rate of gevent).
POOLS = {PREPARE_QUEUE: "prefork", UPSTREAM_QUEUE: "threads", WEBHOOK_QUEUE: "threads"}


def cpu_count() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    return len(os.sched_getaffinity(0))


def default_concurrency() -> dict[str, int]:
    """Pool size per queue unless told: a process per core for the CPU-bound prepare
    (more only queue behind each other and cost a fork and its memory each), many threads
    for the two that wait on the network."""
    return {PREPARE_QUEUE: cpu_count(), UPSTREAM_QUEUE: 64, WEBHOOK_QUEUE: 16}


#: Hard time limits in seconds: past one the pool ends the task (and a prefork child).
#: Each task's soft limit is 10 s shorter, so that it may still log why it was stopped.
PREPARE_TIME_LIMIT = 300
#: Validating a 200 MB input streams it once; admitting a window of lines is seconds.
BATCH_TIME_LIMIT = 900
WEBHOOK_TIME_LIMIT = 60
SOFT_LIMIT_MARGIN = 10


def upstream_time_limit(settings: Settings) -> int:
    """The upstream call's hard limit: its connect and read timeouts, and a minute more."""
    return int(settings.upstream_connect_timeout + settings.upstream_timeout) + 60


def time_limits(settings: Settings) -> dict[str, int]:
    """Each task's hard time limit, by task name."""
    return {
        PREPARE_TASK: PREPARE_TIME_LIMIT,
        BATCH_TASK: BATCH_TIME_LIMIT,
        UPSTREAM_TASK: upstream_time_limit(settings),
        WEBHOOK_TASK: WEBHOOK_TIME_LIMIT,
    }


class Broker(Protocol):
    """What the core asks of the broker. Everything else (consuming, and publishing from
    the workers and the sweeper) goes through Celery itself, in `workers/`."""

    def prepare_push(self, job_id: str, *, behind: bool = False) -> tuple[str, str]:
        """The Redis list and the payload that enqueue the prepare stage of `job_id`.

        The intake LPUSHes them in the same script that writes the job record, so that
        a job exists exactly when its message does and a submit costs one round trip.
        `behind`: a batch line's, taken only when no other prepare message waits, so
        that a batch never queues in front of interactive jobs.
        """
        ...

    def batch_push(self, batch_id: str) -> tuple[str, str]:
        """The Redis list and the payload that enqueue the batch task of `batch_id`, for
        the script that wakes the batch to push in the same step."""
        ...

    def waiting(self, queue: str) -> int:
        """Messages waiting in `queue` (the pacer's ticket audit counts the upstream's)."""
        ...

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue, not counting those a worker has taken."""
        ...

    def relay(self, stop: threading.Event) -> None:
        """Carry what scripts queued in Redis on to a broker elsewhere, until `stop` is
        set: the loop of a thread that the API processes and the sweeper run. Returns at
        once for a broker in Redis, where the scripts queue the messages themselves."""
        ...

    def claim_stranded(self, queue: str, *, older_than: float) -> list[str]:
        """Messages of `queue` that a consumer took more than `older_than` seconds ago
        and never acknowledged, each claimed once: the first argument of each (the job
        id, for prepare), for the caller to send again."""
        ...
