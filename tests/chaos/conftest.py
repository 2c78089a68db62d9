"""The chaos tests' own stack, on a redis-server of its own.

These tests SIGKILL and replace the stack's processes and stop and start its Redis. On
the session's stack, a test that failed halfway would leave a broken stack to every e2e
test after it (pytest runs tests/chaos first); here the damage ends with this package.
One stack for the package, not one per test: a boot costs seconds on a two-core CI
machine, and every test here leaves the stack whole when it passes. The tests that need
an unusual stack (one all-queues worker, a binding budget) start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Stack, running_stack
from visionq.dev.redisserver import RedisServer


@pytest.fixture(scope="package")
def chaos_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("chaos-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def stack(chaos_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(chaos_redis.url, tmp_path_factory) as running:
        yield running
