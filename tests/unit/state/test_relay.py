"""The relay list on a real Redis: a message taken is kept until sent, and one whose relay
died is given back, once, after the cutoff."""

from __future__ import annotations

import json
import time

import redis

from visionq.state import keys
from visionq.state.relay import Relay


def _queue(client: redis.Redis, n: int, at: float) -> bytes:
    raw = json.dumps({"task": "t", "queue": "prepare", "args": [str(n)], "at": at}).encode()
    client.lpush(keys.RELAY, raw)
    return raw


def test_a_taken_message_stays_until_it_is_sent(redis_db: redis.Redis) -> None:
    relay = Relay(redis_db)
    first, second = _queue(redis_db, 1, time.time()), _queue(redis_db, 2, time.time())
    assert relay.take(1) == first  # oldest first
    assert redis_db.lrange(keys.RELAY_SENDING, 0, -1) == [first]
    relay.sent(first)
    assert redis_db.llen(keys.RELAY_SENDING) == 0
    assert relay.take(1) == second
    assert relay.take(1) is None  # nothing left: None after the timeout


def test_a_dead_relays_messages_go_back_once_they_are_old(redis_db: redis.Redis) -> None:
    relay = Relay(redis_db)
    old, recent = _queue(redis_db, 1, time.time() - 60), _queue(redis_db, 2, time.time())
    assert relay.take(1) == old and relay.take(1) == recent  # and the relay died
    assert relay.reclaim(queued_before=time.time() - 30) == 1
    assert redis_db.lrange(keys.RELAY_SENDING, 0, -1) == [recent]
    assert relay.take(1) == old  # first in line again
    assert relay.reclaim(queued_before=time.time() - 30) == 1  # still unsent: back again
