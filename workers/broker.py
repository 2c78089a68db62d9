"""kombu's Redis transport, made to survive a broker restart under a threads pool.

With the threads pool a task thread acknowledges its message on the consumer's channel
while the main thread, having lost Redis, closes that same connection. kombu tears the
transport down under whichever thread comes second (`transport.client = None`), and the
next step of the close (restoring unacknowledged messages) fails with AttributeError
rather than a connection error. Celery calls that unrecoverable and the worker exits:
about one Redis restart in four here (tests/chaos/test_redis_restart.py). A channel whose
transport is gone is closed; saying so with a connection error lets Celery do what it
already does for one: log it, drop the connection and reconnect.

Messages that could not be restored while Redis was down stay in kombu's unacknowledged
set; their jobs come back through our own leases (visionq.leases) in seconds.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


#: For Celery's `broker_transport` setting.
TRANSPORT = f"{__name__}:Transport"
