"""`Idempotency-Key`: one job per tenant and key for 24 hours, even under concurrent retries.

The first request reserves the key with SET NX before it creates anything; a concurrent
twin finds the reservation and waits for the job id instead of creating a second job. The
key's final record is written with the job, in the same step (`jobs/create`, handed an
`IdempotencyRecord`), so a crash after it leaves a key that names the job, and a crash
before it a reservation that expires in a minute. The fingerprint of the body travels
with the key, so the same key on a different body is a conflict rather than a silent
replay of the wrong job.

This module owns the keys (`keys.idempotency`); `jobs/create` is the one script of
another module that writes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from visionq.errors import Conflict
from visionq.state import keys
from visionq.state.redis import redis_errors, script

TTL_SECONDS = 24 * 3600
#: A reservation whose request died before completing it frees the key this soon.
PENDING_TTL_SECONDS = 60
_WAIT_FOR_TWIN_SECONDS = 30.0


@dataclass(frozen=True)
class IdempotencyRecord:
    """What `JobStore.create` writes with the new job: `key` set to `value_prefix` plus
    the job's id, for `ttl` seconds."""

    key: str
    value_prefix: str
    ttl: int


class IdempotencyKeys:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._release = script(client, "release_if_holder")

    def reserve(self, tenant: str, key: str, fingerprint: str) -> str | None:
        """None when this request may create the job; else the id of the job already made."""
        name = keys.idempotency(tenant, key)
        deadline = time.monotonic() + _WAIT_FOR_TWIN_SECONDS
        with redis_errors():
            while True:
                if self._redis.set(name, f"pending|{fingerprint}", nx=True, ex=PENDING_TTL_SECONDS):
                    return None
                raw = self._redis.get(name)
                if raw is None:
                    continue  # the first request gave up and released it: try to take it
                state, stored_fingerprint, *rest = cast(bytes, raw).decode().split("|")
                if stored_fingerprint != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was used with a different body",
                        param="Idempotency-Key",
                    )
                if state == "done":
                    return rest[0]
                if time.monotonic() > deadline:
                    raise Conflict(
                        "a request with this Idempotency-Key is still in progress",
                        param="Idempotency-Key",
                    )
                time.sleep(0.02)

    def remember(self, tenant: str, key: str, fingerprint: str) -> IdempotencyRecord:
        """What `JobStore.create` sets in the same step as the job: the key then names
        the job exactly when the job exists, whatever crashes after."""
        return IdempotencyRecord(keys.idempotency(tenant, key), f"done|{fingerprint}|", TTL_SECONDS)

    def release(self, tenant: str, key: str, fingerprint: str) -> None:
        """The first request failed before making a job: let a retry make it.

        Only our own reservation goes; a twin's, or a finished record, stays.
        """
        with redis_errors():
            self._release(keys=[keys.idempotency(tenant, key)], args=[f"pending|{fingerprint}"])
