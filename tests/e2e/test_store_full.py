"""A Redis at `maxmemory` (noeviction): the API says so, keeps serving reads, and recovers.

The stack runs on a Redis of its own, filled with filler keys until it refuses writes
(issue 14, defect 2). Submits must answer 503 with `Retry-After` and a message naming a
full store, reads of what is there must go on working, `/readyz` must name the store, and
`/metrics` must count the refusals; once memory is freed, submits are accepted again by
themselves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.support import CORPUS, Stack, data_url, running_stack
from visionq.dev.redisserver import RedisServer
from visionq.state.redis import STORE_FULL_MESSAGE

GOOD = CORPUS / "good"
FILLER = "filler:"
#: Submits must be accepted again this soon after memory is freed (the API keeps no
#: state about the store: the next request that writes succeeds).
RECOVERY_BOUND_SECONDS = 30.0


@pytest.fixture(scope="module")
def full_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-full")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(full_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(full_redis.url, tmp_path_factory) as running:
        yield running


def fill_to_maxmemory(client: redis.Redis) -> None:
    """Up to `maxmemory` with filler keys, then the limit a little under what is used,
    so that the small writes of running processes cannot bring it back under."""
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 8 * 1024 * 1024)
    n = 0
    for size in (64 * 1024, 1024, 64):
        try:
            while True:
                client.set(f"{FILLER}{n}", b"x" * size)
                n += 1
        except redis.exceptions.OutOfMemoryError:
            pass
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 4 * 1024 * 1024)


def free_filler(client: redis.Redis) -> None:
    for keys in iter(lambda: client.keys(f"{FILLER}*")[:1000], []):
        client.delete(*keys)


def _store_full(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["type"] == "unavailable"
    assert error["message"] == STORE_FULL_MESSAGE


def _refusals(stack: Stack) -> float:
    text = requests.get(f"{stack.base_url}/metrics", timeout=10).text
    found = re.findall(
        r'^visionq_redis_write_refusals_total\{reason="maxmemory"\} (\S+)$', text, re.M
    )
    return float(found[0]) if found else 0.0


def test_full_store_refuses_writes_serves_reads_and_recovers(
    stack: Stack, full_redis: RedisServer
) -> None:
    body = {"prompt": "what is this?", "images": [data_url(GOOD / "hopper.jpg")]}
    done = stack.run(body)
    assert done["status"] == "succeeded"
    client = redis.Redis.from_url(full_redis.url)
    fill_to_maxmemory(client)
    try:
        with stack.session("alice") as alice, stack.session("bob") as bob:
            # Writes: refused as an outage, for every tenant and body form.
            _store_full(alice.post(f"{stack.base_url}/v1/jobs", json=body, timeout=30))
            _store_full(bob.post(f"{stack.base_url}/v1/jobs", json=body, timeout=30))
            with (GOOD / "hopper.jpg").open("rb") as image:
                upload = alice.post(
                    f"{stack.base_url}/v1/jobs",
                    files=[("image", ("hopper.jpg", image))],
                    data={"prompt": "what is this?"},
                    timeout=30,
                )
            _store_full(upload)
            # Reads need no write: a job, with and without ?wait, and the list.
            for params in ({}, {"wait": "1"}):
                got = alice.get(f"{stack.base_url}/v1/jobs/{done['id']}", params=params)
                assert got.status_code == 200, got.text
                assert got.json()["status"] == "succeeded"
            listed = alice.get(f"{stack.base_url}/v1/jobs", params={"limit": 5}, timeout=30)
            assert listed.status_code == 200, listed.text
            assert done["id"] in [job["id"] for job in listed.json()["data"]]
            # Counting tokens stores nothing.
            counted = alice.post(f"{stack.base_url}/v1/tokens", json=body, timeout=30)
            assert counted.status_code == 200, counted.text
            assert counted.json()["image_tokens"] == done["usage_estimate"]["image_tokens"]
            # Another tenant's job is still not found (reads are still scoped).
            assert bob.get(f"{stack.base_url}/v1/jobs/{done['id']}").status_code == 404
        # Reported, but still ready: every replica shares this Redis, and taking them all
        # out of the load balancer would stop the reads that work.
        ready = requests.get(f"{stack.base_url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"] == STORE_FULL_MESSAGE
        assert _refusals(stack) >= 4
        api = next(p for p in stack.processes if p.name == "api")
        assert "refuses writes (maxmemory)" in api.log_path.read_text()
    finally:
        free_filler(client)
    freed = time.monotonic()
    while True:
        response = stack.submit(body)
        if response.status_code == 202:
            break
        _store_full(response)
        assert time.monotonic() - freed < RECOVERY_BOUND_SECONDS, "submits still refused"
        time.sleep(0.2)
    recovered = time.monotonic() - freed
    print(f"submits accepted again {recovered:.2f} s after memory was freed")
    assert requests.get(f"{stack.base_url}/readyz", timeout=30).status_code == 200
    client.close()
