"""kombu's Redis transport, made to survive a broker restart, a full Redis and a failover.

A broker restart under a threads pool: a task thread acknowledges its message on the
consumer's channel while the main thread, having lost Redis, closes that same
connection. kombu tears the transport down under whichever thread comes second
(`transport.client = None`), and the next step of the close (restoring unacknowledged
messages) fails with AttributeError rather than a connection error. Celery calls that
unrecoverable and the worker exits: about one Redis restart in four here
(tests/chaos/test_redis_restart.py). A channel whose transport is gone is closed; saying
so with a connection error lets Celery do what it already does for one: log it, drop the
connection and reconnect.

A Redis that refuses writes: at `maxmemory` with `noeviction` it answers OOM to every
command that may grow memory, and to every command inside MULTI (so kombu's
acknowledgement, a ZREM and an HDEL in one transaction, is refused too); a replica, which
is what a client still connected to the old primary talks to after a failover, answers
READONLY, and a BRPOP under way as it turns replica gets UNBLOCKED. redis-py raises
ResponseError (subclasses) for all three, which kombu calls channel errors and Celery
unrecoverable: the worker exited on the first acknowledgement or delivery while Redis
was full, and at once on a failover (tests/chaos/test_worker_store_full.py). Here:

- all three are connection errors to Celery, so whatever still meets one (declaring
  queues at start-up, publishing) is retried and reconnected, never the end of the
  worker; after a failover a new connection is the cure, since it may reach the new
  primary;
- a full Redis is the same server, right to refuse: `QoS` keeps the connection and
  holds what Redis would not write. A message that BRPOP took (BRPOP only shrinks
  memory, so it is served) and whose unacknowledged record was refused is kept here and
  handed to Celery once its record is written, when its task can write too; an
  acknowledgement that was refused frees its slot and is written later. While anything
  is held the worker takes no other message, so a full Redis does not drain the queues
  into this process; it retries before each fetch, about once a second.

Messages that could not be restored while Redis was down or full stay in kombu's
unacknowledged set (redelivered after the visibility timeout, a prepare by the sweeper
after a lease), and a message held here is lost if this process ends before Redis takes
writes again; either way its job comes back through our own leases (visionq.leases: a
lease, or `VISIONQ_QUEUED_GRACE` for a job still queued, after the last renewal).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, holding on while Redis is full."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Acknowledgements may come from pool threads as well as the consumer's loop.
        self._held_lock = threading.Lock()
        #: Taken from its list, its record refused: handed to Celery once recorded.
        self._unrecorded: dict[str, Any] = {}
        self._handovers: list[Callable[[], object]] = []
        #: Acknowledged here, its record still in Redis.
        self._unremoved: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except OutOfMemoryError:
            # Out of its list already, and pushing it back would be refused as well.
            virtual.QoS.append(self, message, delivery_tag)
            with self._held_lock:
                self._unrecorded[delivery_tag] = message
            log.warning(
                "Redis is full: message %s is held here until Redis takes writes again",
                delivery_tag,
            )

    def hand_over_when_recorded(self, delivery_tag: str, handover: Callable[[], object]) -> bool:
        """Whether the message is held for want of its record (then `handover` is called
        once the record is written)."""
        with self._held_lock:
            if delivery_tag not in self._unrecorded:
                return False
            self._handovers.append(handover)
            return True

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except OutOfMemoryError:
            virtual.QoS.ack(self, delivery_tag)  # the slot is free; only the removal waits
            with self._held_lock:
                self._unremoved.add(delivery_tag)
            log.warning("Redis is full: the acknowledgement of %s is written later", delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except OutOfMemoryError:
            # Neither put back nor removed: the record stays, and is redelivered after the
            # visibility timeout (a prepare, by the sweeper after a lease).
            virtual.QoS.ack(self, delivery_tag)
            log.warning("Redis is full: message %s stays unacknowledged", delivery_tag)

    def can_consume(self) -> bool:
        # Asked before every fetch (kombu's poll loop): the moment to retry what is held,
        # and to take nothing more while Redis still refuses it, so that a full Redis does
        # not drain the queues into this process.
        return self._write_held() and super().can_consume()

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)
        except OutOfMemoryError:
            # Its lock alone is a write; restoring can wait for the next round.
            log.debug("Redis is full: restoring unacknowledged messages later")

    def restore_unacked(self, client: Any = None) -> None:
        # Closing (a shutdown, a reconnect): a held message goes back to its queue with
        # the others if its record can be written now.
        with contextlib.suppress(OutOfMemoryError):
            self._write_held(hand_over=False)
        with self._held_lock:
            lost, self._handovers = len(self._unrecorded), []
            self._unrecorded.clear()
        if lost:
            log.warning(
                "Redis is full: %d held messages are dropped; their jobs' leases bring them back",
                lost,
            )
        try:
            super().restore_unacked(client)
        except OutOfMemoryError:
            # Not put back: their records stay, redelivered after the visibility timeout.
            delivered: dict[str, Any] = self._delivered
            log.warning("Redis is full: %d messages stay unacknowledged", len(delivered))
            delivered.clear()

    def _write_held(self, *, hand_over: bool = True) -> bool:
        """Write the held records and removals; False while Redis still refuses them."""
        with self._held_lock:
            unrecorded, unremoved = dict(self._unrecorded), set(self._unremoved)
        if not unrecorded and not unremoved:
            return True
        with self.pipe_or_acquire() as pipe:
            for tag, message in unrecorded.items():
                # As kombu's `QoS.append` writes it (visionq.broker.celery_redis reads it too).
                delivery = message.delivery_info
                raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
                pipe.zadd(self.unacked_index_key, {tag: time.time()})
                pipe.hset(self.unacked_key, tag, raw)
            for tag in unremoved:
                self._remove_from_indices(tag, pipe)
            try:
                pipe.execute()
            except OutOfMemoryError:
                return False
        with self._held_lock:
            for tag in unrecorded:
                del self._unrecorded[tag]
            self._unremoved -= unremoved
            handovers, self._handovers = (self._handovers, []) if hand_over else ([], [])
        log.info(
            "Redis takes writes again: recorded %d held messages and %d acknowledgements",
            len(unrecorded),
            len(unremoved),
        )
        for handover in handovers:
            handover()
        return True


class Channel(kombu_redis.Channel):
    QoS = QoS

    def basic_consume(
        self,
        queue: str,
        no_ack: bool,
        callback: Callable[[Any], object],
        consumer_tag: str,
        **kwargs: Any,
    ) -> Any:
        def deliver(message: Any) -> object:
            # A message whose record Redis refused goes to Celery once it is recorded, when
            # its task can write too, rather than now, to fail against a full Redis.
            if not no_ack and self.qos.hand_over_when_recorded(
                message.delivery_tag, lambda: callback(message)
            ):
                return None
            return callback(message)

        return super().basic_consume(queue, no_ack, deliver, consumer_tag, **kwargs)

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except ResponseError as exc:
            # What a BRPOP under way gets when its server turns replica (a failover): a
            # plain ResponseError, which Celery would call unrecoverable.
            if not str(exc).startswith("UNBLOCKED"):
                raise
            self.client.connection.disconnect()
            raise RedisConnectionError(str(exc)) from exc

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same, on kombu's Sentinel channel: it asks the sentinels for the master each
    time it connects, which after a failover is the new one."""


_CONNECTION_ERRORS = (*kombu_redis.Transport.connection_errors, OutOfMemoryError, ReadOnlyError)


class Transport(kombu_redis.Transport):
    Channel = Channel
    connection_errors = _CONNECTION_ERRORS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    connection_errors = _CONNECTION_ERRORS


def transport_for(broker_url: str) -> str | None:
    """Celery's `broker_transport` for `broker_url` (`celery_config`'s): ours, on a plain
    Redis or a Sentinel group; None (Celery's own) for RabbitMQ."""
    if broker_url.startswith("sentinel://"):
        return f"{__name__}:SentinelTransport"
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:Transport"
    return None
