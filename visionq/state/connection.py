"""How a process reaches Redis: one URL (`VISIONQ_REDIS_URL`), a plain server or a
Sentinel group.

`redis://host:6379/0` is one server. `redis+sentinel://host1:26379,host2:26379/mymaster/0`
names the sentinels, the master's service name and the database; a password before the
hosts (`redis+sentinel://:secret@…`) is the master's, and `?sentinel_password=…` the
sentinels' own when they have one. With Sentinel every client asks the sentinels where
the master is, and asks again after a failover: a connection that meets the demoted master
(READONLY) or a dead one is dropped, the call fails as an outage (`redis_errors`: 503 with
`Retry-After` at the API, a retry in a worker), and the next call reaches the new master.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    password: str | None
    sentinel_password: str | None


def sentinel_url(url: str) -> SentinelUrl | None:
    """The parts of a `redis+sentinel://` URL, or None for any other Redis URL."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None if credentials else None
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"a sentinel must be host:port, not {host!r}")
        sentinels.append((name, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a Sentinel URL ends in /<master name>[/<db>]")
    query = parse_qs(parts.query)
    return SentinelUrl(
        sentinels=sentinels,
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        password=password,
        sentinel_password=query.get("sentinel_password", [None])[0],
    )


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool that makes threads wait for a free connection, as the API's plain
    pool does (redis-py has no blocking Sentinel pool of its own)."""


def open_redis(url: str, *, max_connections: int | None = None, **options: Any) -> redis.Redis:
    """A client for `url`. With `max_connections`, threads queue for one of that many
    connections instead of opening more; `options` are redis-py's connection options."""
    found = sentinel_url(url)
    if found is None:
        if max_connections is None:
            return redis.Redis.from_url(url, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, **options
        )
        return redis.Redis(connection_pool=pool)
    timeouts: dict[str, Any] = {
        k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options
    }
    manager = Sentinel(
        found.sentinels,
        sentinel_kwargs={"password": found.sentinel_password, **timeouts},
    )
    pool_class: type[SentinelConnectionPool] = SentinelConnectionPool
    if max_connections is not None:
        pool_class = _BlockingSentinelPool
        options = {**options, "max_connections": max_connections}
    client: redis.Redis = manager.master_for(
        found.service,
        connection_pool_class=pool_class,
        db=found.db,
        password=found.password,
        **options,
    )
    return client
