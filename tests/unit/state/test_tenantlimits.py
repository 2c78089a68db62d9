"""Per-tenant limits on a real Redis of their own, which these tests fill to `maxmemory`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import REGISTRY

from tests.e2e.test_store_full import fill_to_maxmemory, free_filler
from visionq.dev.redisserver import RedisServer
from visionq.errors import RateLimited, Unavailable
from visionq.state.redis import STORE_FULL_MESSAGE
from visionq.state.storewrites import WriteRefusals
from visionq.state.tenantlimits import TenantLimits, UploadSlots


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    running = RedisServer(tmp_path_factory.mktemp("redis-limits"), appendonly=False).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(server.url)
    conn.config_set("maxmemory", 0)
    conn.flushdb()
    yield conn
    free_filler(conn)
    conn.config_set("maxmemory", 0)
    conn.close()


def _refused() -> float:
    value = REGISTRY.get_sample_value("visionq_redis_write_refusals_total", {"reason": "maxmemory"})
    return value or 0.0


def test_a_read_goes_through_when_redis_refuses_the_count(client: redis.Redis) -> None:
    limits = TenantLimits(client, {"*": "5/minute"}, WriteRefusals())
    limits.hit("alice")
    fill_to_maxmemory(client)
    before = _refused()
    limits.hit("alice", writes=False)
    assert _refused() == before + 1
    with pytest.raises(Unavailable) as refused:
        limits.hit("alice")
    assert refused.value.message == STORE_FULL_MESSAGE


def test_a_tenant_over_its_limit_stays_refused_when_redis_is_full(client: redis.Redis) -> None:
    limits = TenantLimits(client, {"*": "2/minute"}, WriteRefusals())
    limits.hit("alice")
    limits.hit("alice")
    fill_to_maxmemory(client)
    with pytest.raises(RateLimited):
        limits.hit("alice", writes=False)
    limits.hit("bob", writes=False)


def test_upload_slots_cap_a_tenant_and_free_themselves(client: redis.Redis) -> None:
    slots = UploadSlots(client, {"*": 2, "bob": 1}, lease=0.5)
    first = slots.take("alice")
    assert first is not None
    assert slots.take("alice") is not None
    with pytest.raises(RateLimited) as refused:
        slots.take("alice")
    assert refused.value.retry_after > 0
    assert slots.take("bob") is not None  # another tenant has its own
    with pytest.raises(RateLimited):
        slots.take("bob")
    first.release()
    assert slots.take("alice") is not None
    # Never released (its API process was killed): the leases end by themselves.
    time.sleep(0.6)
    assert slots.take("alice") is not None
    assert slots.take("alice") is not None


def test_no_upload_cap(client: redis.Redis) -> None:
    assert UploadSlots(client, {"*": 0}, lease=1).take("alice") is None
