"""The RabbitMQ broker (`CeleryAmqp`) against the machine's RabbitMQ, in a virtual host of
its own: the relay publishes what a script queued as the message Celery itself would send,
and queue depths are the queues' own counts. Skipped where RabbitMQ is not installed (a
laptop); CI installs it."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator

import amqp
import pytest
import redis

from tests.support.rabbitmq import vhost
from visionq.broker import PREPARE_QUEUE, PREPARE_TASK, QUEUES
from visionq.broker.celery_amqp import CeleryAmqp
from visionq.dev.ports import free_port
from visionq.errors import Unavailable
from visionq.state import keys

pytestmark = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="RabbitMQ is not installed here"
)


@pytest.fixture
def broker_url() -> Iterator[str]:
    with vhost() as url:
        yield url


@pytest.fixture
def broker(redis_db: redis.Redis, broker_url: str) -> Iterator[CeleryAmqp]:
    opened = CeleryAmqp(redis_db, broker_url)
    yield opened
    opened.close()


def _connection(broker_url: str) -> amqp.Connection:
    connection = amqp.Connection(
        host="127.0.0.1:5672", virtual_host=broker_url.rsplit("/", 1)[1], confirm_publish=True
    )
    connection.connect()
    return connection


def _until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_relay_publishes_what_a_script_queued_as_celerys_own_message(
    redis_db: redis.Redis, broker: CeleryAmqp, broker_url: str
) -> None:
    assert broker.queue_depths() == dict.fromkeys(QUEUES, 0)
    redis_db.lpush(*broker.prepare_push("job_x"))  # what jobs/create does in its step
    stop = threading.Event()
    relay = threading.Thread(target=broker.relay, args=(stop,), daemon=True)
    relay.start()
    try:
        _until(lambda: broker.waiting(PREPARE_QUEUE) == 1)
        assert redis_db.llen(keys.RELAY) == redis_db.llen(keys.RELAY_SENDING) == 0
    finally:
        stop.set()
        relay.join(5)
    connection = _connection(broker_url)
    try:
        message = connection.channel().basic_get(PREPARE_QUEUE, no_ack=True)
    finally:
        connection.close()
    # Celery's task protocol 2 (tests/workers/test_enqueue.py holds it to Celery's own),
    # which the workers of the RabbitMQ runs of tests/e2e take and run.
    assert message.headers["task"] == PREPARE_TASK
    assert json.loads(message.body)[0] == ["job_x"]
    assert message.properties["content_type"] == "application/json"


def test_a_message_a_dead_relay_held_is_given_back_by_the_sweep(
    redis_db: redis.Redis, broker: CeleryAmqp
) -> None:
    key, raw = broker.prepare_push("job_y")
    old = json.dumps({**json.loads(raw), "at": time.time() - 60})
    redis_db.lpush(keys.RELAY_SENDING, old)  # taken, never confirmed: its relay died
    assert broker.claim_stranded(PREPARE_QUEUE, older_than=30) == []
    assert redis_db.lrange(key, 0, -1) == [old.encode()]


def test_queue_depths_count_what_waits_in_rabbitmq(broker: CeleryAmqp, broker_url: str) -> None:
    broker.queue_depths()  # declares the queues, as the API does
    connection = _connection(broker_url)
    try:
        channel = connection.channel()
        for _ in range(3):
            channel.basic_publish(amqp.Message("{}"), exchange="upstream", routing_key="upstream")
    finally:
        connection.close()
    assert broker.queue_depths() == {"prepare": 0, "upstream": 3, "webhooks": 0}


def test_rabbitmq_out_of_reach_is_unavailable(redis_db: redis.Redis) -> None:
    unreachable = CeleryAmqp(redis_db, f"amqp://guest:guest@127.0.0.1:{free_port()}/x")
    with pytest.raises(Unavailable) as down:
        unreachable.queue_depths()
    assert down.value.status == 503 and "RabbitMQ" in down.value.message
