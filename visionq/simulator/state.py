"""The simulator's limits and counters: MiMo's rate limits (requests and tokens per
minute, calls in flight) as the simulator enforces them, what it admitted and when, and
the on-demand configuration tests change. One `SimState` per app, so two apps in one
process share nothing."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from visionq.simulator.inputs import SimError


@dataclass(frozen=True)
class RateLimits:
    """MiMo's per-model account limits ("Pricing and Rate Limits"); 0 means no limit.

    Requests and tokens are counted over a moving 60-second window, calls in flight as
    they run; a request over any of them is a 429 with `Retry-After`, and is not counted.
    """

    rpm: int = 100
    tpm: int = 10_000_000
    concurrency: int = 0


UNLIMITED = RateLimits(rpm=0, tpm=0, concurrency=0)
LIMIT_FIELDS = tuple(f.name for f in fields(RateLimits))
_WINDOW = 60.0
_ADMITTED_KEPT = 100_000


@dataclass
class SimState:
    """One app's mutable state; every access goes through the lock (the server is threaded)."""

    api_key: str | None
    latency: float
    limits: RateLimits = field(default_factory=RateLimits)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    #: per model: [arrival, tokens] of each request admitted in the last minute
    window: dict[str, deque[list[float]]] = field(default_factory=lambda: defaultdict(deque))
    in_flight: Counter[str] = field(default_factory=Counter)
    admitted: deque[float] = field(default_factory=lambda: deque(maxlen=_ADMITTED_KEPT))

    def admit(self, model: str) -> list[float]:
        """Count one request against the model's limits, or raise the 429 MiMo would."""
        limits = self.limits
        with self.lock:
            now = time.monotonic()
            window = self.window[model]
            while window and window[0][0] <= now - _WINDOW:
                window.popleft()
            wait = None
            if limits.rpm and len(window) >= limits.rpm:
                wait = window[0][0] + _WINDOW - now
            elif limits.concurrency and self.in_flight[model] >= limits.concurrency:
                wait = 1.0
            if wait is not None:
                self.rate_limited += 1
                raise _rate_limited(model, wait, "requests")
            entry = [now, 0.0]
            window.append(entry)
            self.in_flight[model] += 1
            self.admitted.append(time.time())
            return entry

    def charge(self, model: str, entry: list[float], tokens: int) -> None:
        """Add the request's prompt tokens, or refuse it over the tokens-per-minute limit."""
        with self.lock:
            window = self.window[model]
            used = sum(tokens for _, tokens in window)
            if self.limits.tpm and used + tokens > self.limits.tpm:
                self.rate_limited += 1
                with contextlib.suppress(ValueError):
                    window.remove(entry)
                raise _rate_limited(model, window[0][0] + _WINDOW - entry[0], "tokens")
            entry[1] = tokens

    def leave(self, model: str) -> None:
        with self.lock:
            self.in_flight[model] -= 1

    def current_latency(self) -> float:
        with self.lock:
            return self.latency

    def configure(self, *, latency: float, **limits: int) -> None:
        with self.lock:
            self.latency = latency
            self.limits = replace(self.limits, **limits)

    def record(self, outcome: str) -> None:
        with self.lock:
            self.requests += 1
            self.by_status[outcome] += 1

    def attempt(self, key: str) -> int:
        """Count one more request for `fail_first` under `key`; returns the new count."""
        with self.lock:
            self.attempts[key] += 1
            return self.attempts[key]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            admitted = list(self.admitted)
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "rate_limited": self.rate_limited,
                "peak_rpm": _peak(admitted, _WINDOW),
                "per_minute": _per_window(admitted, _WINDOW),
                "first_admitted": admitted[0] if admitted else None,
                "last_admitted": admitted[-1] if admitted else None,
                "limits": asdict(self.limits),
            }


def _peak(times: list[float], window: float) -> int:
    """The most requests admitted in any `window` seconds (times are sorted)."""
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _per_window(times: list[float], window: float) -> list[int]:
    """Requests admitted in each consecutive `window` from the first one on."""
    counts: list[int] = []
    for at in times:
        index = int((at - times[0]) // window)
        counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1
    return counts


def _rate_limited(model: str, wait: float, what: str) -> SimError:
    return SimError(
        429,
        f"Rate limit reached for {model} ({what} per minute); try again later",
        headers={"Retry-After": f"{max(1, math.ceil(wait))}"},
    )
