"""The numbered databases of the session's redis-server, handed out so that no two users
ever share one.

Database 0 is the session stack's. A test leases one for as long as it runs (`lease`),
flushed before and after, so that keys which are global by design (leases, the outbox,
the pacer's queues) never meet another test's. A stack that a module starts for itself
takes one for the rest of the session (`take`): what its processes wrote stays there for
the session's last check, which looks for secrets in every database
(tests/e2e/test_secrets.py).

Numbering by hand, as the tests once did, let two modules pick the same number; here no
number is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


class Databases:
    def __init__(self, server_url: str) -> None:
        self._base = server_url.rsplit("/", 1)[0]
        with redis.Redis.from_url(server_url) as client:
            self.count = int(client.config_get("databases")["databases"])
        self._free = list(range(1, self.count))

    def url(self, db: int) -> str:
        return f"{self._base}/{db}"

    def _flush(self, db: int) -> None:
        with redis.Redis.from_url(self.url(db)) as client:
            client.flushdb()

    def _acquire(self) -> int:
        if not self._free:
            raise RuntimeError(
                f"all {self.count - 1} spare databases of the session's Redis are in use:"
                " a test holds more than it gives back, or too many module stacks took one"
            )
        db = self._free.pop(0)
        self._flush(db)
        return db

    @contextmanager
    def lease(self) -> Iterator[str]:
        """The URL of an empty database of its own while the block runs."""
        db = self._acquire()
        try:
            yield self.url(db)
        finally:
            self._flush(db)
            self._free.insert(0, db)

    def take(self) -> str:
        """The URL of an empty database of its own, kept to the end of the session."""
        return self.url(self._acquire())
