"""A clock for the state classes (`clock=`) that runs with the host's but can be moved
ahead, so that a test lets a lease or a due time pass without sleeping for it. Redis's
own expiries (TTL) still take real time."""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self._ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self._ahead

    def advance(self, seconds: float) -> None:
        self._ahead += seconds
