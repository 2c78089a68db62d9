"""The relay list: messages a script queued for a broker outside Redis (RabbitMQ), waiting
for a relay to publish them (`visionq.broker.celery_amqp`).

A relay takes a message into the sending list, publishes it, and only then removes it,
so a relay that dies in between leaves it there; `reclaim` gives such messages back.
This module owns `keys.RELAY` and `keys.RELAY_SENDING`; the scripts that queue a job's or
a batch's first message push to `keys.RELAY` in their own step (as they would to
kombu's list on Redis).
"""

from __future__ import annotations

from typing import cast

import redis

from visionq.state import keys
from visionq.state.redis import redis_errors, script


class Relay:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reclaim = script(client, "relay/reclaim")

    def take(self, timeout: int) -> bytes | None:
        """The next message to send, now in the sending list; None after `timeout` s."""
        with redis_errors():
            raw = self._redis.blmove(keys.RELAY, keys.RELAY_SENDING, timeout, "RIGHT", "LEFT")
        return cast(bytes | None, raw)

    def sent(self, raw: bytes) -> None:
        with redis_errors():
            self._redis.lrem(keys.RELAY_SENDING, 1, cast(str, raw))

    def reclaim(self, *, queued_before: float) -> int:
        """Give messages still being sent that were queued before `queued_before` back to
        the relay list, at the end relays take from next; how many."""
        with redis_errors():
            return int(self._reclaim(keys=[keys.RELAY_SENDING, keys.RELAY], args=[queued_before]))
