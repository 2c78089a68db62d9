"""Celery over RabbitMQ (`VISIONQ_BROKER_URL=amqp://…`), with Redis kept for everything else.

The queues are quorum queues (replicated, durable), each bound to a topic exchange of its
name: Celery's native delayed delivery, which runs a retry's countdown inside RabbitMQ,
needs topic exchanges. Workers consume with real acknowledgements: a message a dead worker
held goes back to its queue when its channel closes, with no visibility timeout, so
`claim_stranded` has nothing of Celery's to claim.

**The first message of a job.** With Redis as the broker, the job's script pushes its
prepare message in the same step that writes the job. A script cannot reach RabbitMQ, so it
pushes the message to the relay list (`visionq.state.relay`) instead, still in the same
step, and a relay thread in each API process and in the sweeper moves it on: it takes a
message into the sending list, publishes it with a publisher confirm, and only then
removes it. A relay that dies in between leaves the message there; the sweeper gives it
back to the relay list after a lease (`claim_stranded`), so it is sent again: at least
once, never lost, and a second message for a job is harmless (the job's lease lets one
worker take it). The same list carries every message a script queues (a batch's task).

Batch lines' prepare messages cannot wait behind interactive ones here as they do on
Redis (quorum queues of RabbitMQ 3.x have no priorities): they share the prepare queue in
order. Preparing is quick and a batch admits at most its window of lines at a time, so an
interactive job waits behind at most that many; the upstream stage, where the time is,
keeps its order in the pacer.

No Celery or kombu here (the core may not import them): messages are built in Celery's
task protocol 2 by `celery_redis.task_message` and published with `amqp` (py-amqp, the
client kombu itself uses); the queues are declared the way `celery_config` tells Celery
to declare them, so either side may come first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import amqp
import redis

from visionq.broker import BATCH_TASK, PREPARE_QUEUE, PREPARE_TASK, QUEUES
from visionq.broker.protocol import task_message
from visionq.errors import Unavailable
from visionq.state import keys
from visionq.state.relay import Relay

log = logging.getLogger(__name__)
_T = TypeVar("_T")

QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
#: How long a relay waits on the relay list before it looks again (and can stop).
RELAY_POLL_SECONDS = 1


def task_queues() -> dict[str, dict[str, Any]]:
    """Celery's `task_queues`, in its dict form: a quorum queue per queue name, bound to a
    topic exchange of the same name by the queue's name."""
    return {
        queue: {
            "exchange": queue,
            "exchange_type": "topic",
            "routing_key": queue,
            "queue_arguments": QUEUE_ARGUMENTS,
            "durable": True,
        }
        for queue in QUEUES
    }


def amqp_options() -> dict[str, Any]:
    """What Celery needs beyond the broker URL to use the quorum queues above."""
    return {
        "task_queues": task_queues(),
        "task_default_exchange_type": "topic",
        "task_default_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
    }


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def _relayed(task: str, queue: str, args: list[str]) -> tuple[str, str]:
    return keys.RELAY, json.dumps({"task": task, "queue": queue, "args": args, "at": time.time()})


class _Channel:
    """One AMQP connection and channel, opened on first use and again after an error,
    with publisher confirms on; one caller at a time."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._connection: amqp.Connection | None = None
        self._channel: Any = None

    def _open(self) -> Any:
        if self._channel is None:
            parts = urlsplit(self._url)
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
            connection = amqp.Connection(
                host=f"{parts.hostname or 'localhost'}:{parts.port or 5672}",
                userid=unquote(parts.username or "guest"),
                password=unquote(parts.password or "guest"),
                virtual_host=vhost,
                connect_timeout=5,
                confirm_publish=True,
            )
            connection.connect()
            channel = connection.channel()
            for queue, spec in task_queues().items():
                channel.exchange_declare(queue, "topic", durable=True, auto_delete=False)
                channel.queue_declare(
                    queue, durable=True, auto_delete=False, arguments=spec["queue_arguments"]
                )
                channel.queue_bind(queue, queue, routing_key=queue)
            self._connection, self._channel = connection, channel
        return self._channel

    def call(self, use: Callable[[Any], _T]) -> _T:
        with self._lock:
            try:
                return use(self._open())
            except Exception:
                self.close()
                raise

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already gone: nothing to close cleanly
                log.debug("closing the AMQP connection failed", exc_info=True)


def _publish(raw: bytes) -> Callable[[Any], None]:
    """What publishes one relayed message (`_relayed`) on a channel."""
    message = json.loads(raw)
    headers, body = task_message(message["task"], message["args"])
    amqp_message = amqp.Message(
        json.dumps(body),
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
        correlation_id=headers["id"],
    )

    def publish(channel: Any) -> None:
        channel.basic_publish(amqp_message, exchange=message["queue"], routing_key=message["queue"])

    return publish


class CeleryAmqp:
    """The `visionq.broker.Broker` of Celery workers on RabbitMQ."""

    def __init__(self, client: redis.Redis, broker_url: str) -> None:
        self._relay = Relay(client)
        self._channel = _Channel(broker_url)

    def close(self) -> None:
        """Close the connection to RabbitMQ (opened again if used after)."""
        self._channel.close()

    def prepare_push(self, job_id: str, *, behind: bool = False) -> tuple[str, str]:
        return _relayed(PREPARE_TASK, PREPARE_QUEUE, [job_id])

    def batch_push(self, batch_id: str) -> tuple[str, str]:
        return _relayed(BATCH_TASK, PREPARE_QUEUE, [batch_id])

    def waiting(self, queue: str) -> int:
        return self.queue_depths()[queue]

    def queue_depths(self) -> dict[str, int]:
        def count(channel: Any) -> dict[str, int]:
            return {q: int(channel.queue_declare(q, passive=True)[1]) for q in QUEUES}

        try:
            return self._channel.call(count)
        except (OSError, amqp.exceptions.AMQPError) as exc:
            raise Unavailable("the broker (RabbitMQ) is unreachable", retry_after=5) from exc

    def claim_stranded(self, queue: str, *, older_than: float) -> list[str]:
        """RabbitMQ gives a dead consumer's messages back by itself, so nothing of Celery's
        is stranded. What can be is a relayed message whose relay died before RabbitMQ
        confirmed it: it goes back to the relay list, to be sent again."""
        if queue == PREPARE_QUEUE and self._relay.reclaim(queued_before=time.time() - older_than):
            log.warning("messages of a relay that died were given back to the relay list")
        return []

    def relay(self, stop: threading.Event) -> None:
        """Move relayed messages to RabbitMQ until `stop` is set (a thread's loop)."""
        while not stop.is_set():
            try:
                raw = self._relay.take(RELAY_POLL_SECONDS)
                if raw is None:
                    continue
                self._channel.call(_publish(raw))
                self._relay.sent(raw)
            except (Unavailable, OSError, amqp.exceptions.AMQPError):
                log.warning("relaying a message to RabbitMQ failed; trying again", exc_info=True)
                stop.wait(1.0)
