"""The two things every module of `visionq.state` needs from Redis itself: how its errors
become ours (`redis_errors`), and the Lua scripts (`script`).

Every script is a file under `lua/`, in the folder of the module that owns it (shared
ones at the top), and begins with one `-- KEYS[n] = …` or `-- ARGV[n] = …` line per
argument. Each is registered once per client: redis-py then runs it by its SHA1
(EVALSHA) and loads it again by itself after a Redis restart.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from visionq.errors import Unavailable

#: What a refused write says (Redis at `maxmemory`), for clients and operators alike.
STORE_FULL_MESSAGE = "the job store (Redis) is full and refuses writes; try again later"
UNREACHABLE_MESSAGE = "the job store (Redis) is unreachable"
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Refusal:
    """A kind of refused write: the error Redis answers with, its name in the
    `visionq_redis_write_refusals_total{reason}` metric, and what the client is told."""

    error: type[redis.RedisError]
    reason: str
    message: str


#: The writes a Redis that is up may still refuse. At `maxmemory` (noeviction) it refuses
#: them with OOM; a replica promoted away from during a failover refuses them with
#: READONLY. Both pass once memory is freed or the failover ends: outages, not bugs.
REFUSALS = (
    Refusal(redis.exceptions.OutOfMemoryError, "maxmemory", STORE_FULL_MESSAGE),
    Refusal(
        redis.exceptions.ReadOnlyError,
        "readonly",
        "the job store (Redis) accepts no writes (read-only)",
    ),
)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Map a Redis outage, or a refused write (`REFUSALS`), to `Unavailable` at the
    boundary, never a traceback."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(UNREACHABLE_MESSAGE, retry_after=RETRY_AFTER_SECONDS) from exc
    except redis.RedisError as exc:
        for refusal in REFUSALS:
            if isinstance(exc, refusal.error):
                raise Unavailable(refusal.message, retry_after=RETRY_AFTER_SECONDS) from exc
        raise


@dataclass(frozen=True)
class Replicas:
    """How many replicas must hold a write before the outside world is told of it (a 202,
    a new batch or file), and how long to wait for them. Redis replicates asynchronously:
    without this, a failover can lose what the old master acknowledged but had not yet
    sent on. One `WAIT` round trip per such write; none when `count` is 0."""

    count: int = 0
    timeout: float = 1.0

    def confirm(self, client: redis.Redis) -> None:
        if not self.count:
            return
        with redis_errors():
            held = int(client.wait(self.count, int(self.timeout * 1000)))
        if held < self.count:
            raise Unavailable(
                f"the job store (Redis) has {held} of {self.count} replicas in reach",
                retry_after=RETRY_AFTER_SECONDS,
            )


#: The default: a write counts once the master holds it.
NO_REPLICAS = Replicas()


_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()
_registering = threading.Lock()


def script(client: redis.Redis, name: str, *, library: str | None = None) -> Script:
    """The script `lua/<name>.lua`, registered on `client` the first time it is asked for.

    `library` names a file of Lua functions (under `lua/lib/`) that the script calls: it
    is put in front of the script, since Redis runs one source text per script.
    """
    source = _source(name) if library is None else _source(f"lib/{library}") + _source(name)
    with _registering:
        scripts = _registered.setdefault(client, {})
        if name not in scripts:
            scripts[name] = client.register_script(source)
        return scripts[name]


@cache
def _source(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text()
