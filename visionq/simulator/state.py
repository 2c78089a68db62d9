"""The simulator's accounts and counters: MiMo's accounts as the simulator enforces them
(each with its keys, its per-model rate limits, its balance and its faults), the prompt
cache of each key, and what was admitted, when, and billed. One `SimState` per app, so two
apps in one process share nothing."""

from __future__ import annotations

import contextlib
import hmac
import math
import threading
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from visionq.simulator.inputs import Received, SimError


@dataclass(frozen=True)
class RateLimits:
    """MiMo's per-model account limits ("Pricing and Rate Limits"); 0 means no limit.

    Requests and tokens are counted over a moving 60-second window, calls in flight as
    they run; a request over any of them is a 429 with `Retry-After`, and is not counted.
    MiMo counts them per account and model, whichever of the account's keys was used.
    """

    rpm: int = 100
    tpm: int = 10_000_000
    concurrency: int = 0


UNLIMITED = RateLimits(rpm=0, tpm=0, concurrency=0)
LIMIT_FIELDS = tuple(f.name for f in fields(RateLimits))
#: What `POST /_sim/config` may set on one account besides its limits.
FAULT_FIELDS = ("revoked", "balance", "burst_402_over")
#: The one account of a simulator given no accounts: `api_key`'s, or any key's.
DEFAULT_ACCOUNT = "default"
#: How many image hashes each key's prompt cache holds; the least recently sent go first.
CACHE_ENTRIES = 10_000
_WINDOW = 60.0
_ADMITTED_KEPT = 100_000
_NO_FUNDS = "Insufficient account funds"


@dataclass(frozen=True)
class SimAccount:
    """One MiMo account: MiMo limits and bills an account, not a key, so all of its keys
    share its windows and its balance.

    The keys stay out of the repr, so an account in a log or a failed assertion shows none.
    """

    name: str
    keys: tuple[str, ...] = field(repr=False)
    limits: RateLimits

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("an account needs a non-empty name")
        if (
            not isinstance(self.keys, tuple)
            or not self.keys
            or not all(isinstance(key, str) and key for key in self.keys)
        ):
            raise ValueError(f"account {self.name!r} needs a tuple of one or more non-empty keys")


@dataclass(frozen=True)
class Usage:
    """One answer's tokens. `prompt_tokens` is the whole prompt, the cached part included,
    whichever API answered (Anthropic's answer reports the two parts apart)."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    image_tokens: int


USAGE_FIELDS = tuple(f.name for f in fields(Usage))


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the account that is limited and billed, and the key whose
    prompt cache it reads."""

    account: str
    key: str = field(repr=False)


@dataclass
class _Account:
    """One account's limits, faults and counters; only touched under `SimState.lock`."""

    limits: RateLimits
    revoked: bool = False
    balance: int | None = None
    burst_402_over: int = 0
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    #: per model: [arrival, tokens] of each request admitted in the last minute
    window: dict[str, deque[list[float]]] = field(default_factory=lambda: defaultdict(deque))
    in_flight: Counter[str] = field(default_factory=Counter)
    #: the most calls it had in flight at once, over all models
    peak_in_flight: int = 0
    admitted: deque[float] = field(default_factory=lambda: deque(maxlen=_ADMITTED_KEPT))
    usage_by_model: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


class SimState:
    """One app's mutable state; every access goes through the lock (the server is threaded).

    Which key belongs to which account is fixed at construction, so it is read unlocked.
    """

    def __init__(
        self,
        *,
        latency: float,
        api_key: str | None = None,
        limits: RateLimits | None = None,
        accounts: Sequence[SimAccount] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.latency = latency
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.admitted: deque[float] = deque(maxlen=_ADMITTED_KEPT)
        self._caches: dict[str, OrderedDict[str, None]] = defaultdict(OrderedDict)
        self._accounts: dict[str, _Account] = {}
        #: key -> account name; None: any non-empty key is the default account's
        self._keys: dict[str, str] | None = None
        if accounts is None:
            self._accounts[DEFAULT_ACCOUNT] = _Account(limits or RateLimits())
            if api_key is not None:
                self._keys = {api_key: DEFAULT_ACCOUNT}
            return
        if api_key is not None or limits is not None:
            raise ValueError("with accounts, the keys and limits are the accounts' own")
        if not accounts:
            raise ValueError("accounts, when given, must hold at least one account")
        self._keys = {}
        for account in accounts:
            if account.name in self._accounts:
                raise ValueError(f"account {account.name!r} is given twice")
            self._accounts[account.name] = _Account(account.limits)
            for key in account.keys:
                if key in self._keys:
                    owner = self._keys[key]
                    raise ValueError(f"account {account.name!r} repeats a key of {owner!r}")
                self._keys[key] = account.name

    def identify(self, presented: str) -> Caller | None:
        """The caller a key stands for, or None for a key no account has."""
        if self._keys is None:
            return Caller(DEFAULT_ACCOUNT, presented)
        found = None
        for key, name in self._keys.items():  # all of them: the time does not tell which
            if hmac.compare_digest(presented.encode(), key.encode()):
                found = name
        return None if found is None else Caller(found, presented)

    def revoked(self, account: str) -> bool:
        with self.lock:
            return self._accounts[account].revoked

    def admit(self, account: str, model: str) -> list[float]:
        """Count one request against the account's limits for the model, or raise the 402
        or 429 MiMo would."""
        with self.lock:
            state = self._accounts[account]
            if state.balance is not None and state.balance <= 0:
                raise SimError(402, _NO_FUNDS)
            if state.burst_402_over and sum(state.in_flight.values()) >= state.burst_402_over:
                raise SimError(402, _NO_FUNDS)  # MiMo's issue #99: a 429 that says 402
            limits = state.limits
            now = time.monotonic()
            window = state.window[model]
            while window and window[0][0] <= now - _WINDOW:
                window.popleft()
            wait = None
            if limits.rpm and len(window) >= limits.rpm:
                wait = window[0][0] + _WINDOW - now
            elif limits.concurrency and state.in_flight[model] >= limits.concurrency:
                wait = 1.0
            if wait is not None:
                state.rate_limited += 1
                raise _rate_limited(model, wait, "requests")
            entry = [now, 0.0]
            window.append(entry)
            state.in_flight[model] += 1
            state.peak_in_flight = max(state.peak_in_flight, sum(state.in_flight.values()))
            admitted_at = time.time()
            state.admitted.append(admitted_at)
            self.admitted.append(admitted_at)
            return entry

    def charge(self, account: str, model: str, entry: list[float], tokens: int) -> None:
        """Add the request's prompt tokens, or refuse it over the tokens-per-minute limit."""
        with self.lock:
            state = self._accounts[account]
            window = state.window[model]
            used = sum(tokens for _, tokens in window)
            if state.limits.tpm and used + tokens > state.limits.tpm:
                state.rate_limited += 1
                oldest = window[0][0] if window else entry[0]  # `entry` may be all there is
                with contextlib.suppress(ValueError):
                    window.remove(entry)
                raise _rate_limited(model, oldest + _WINDOW - entry[0], "tokens")
            entry[1] = tokens

    def leave(self, account: str, model: str) -> None:
        with self.lock:
            self._accounts[account].in_flight[model] -= 1

    def recall(self, caller: Caller, received: list[Received]) -> int:
        """The image tokens of the images this key sent in an answered request before."""
        with self.lock:
            cache = self._caches[caller.key]
            return sum(image.tokens for image in received if image.sha256 in cache)

    def bill(self, caller: Caller, model: str, usage: Usage, received: list[Received]) -> None:
        """Count an answer's tokens, take them off the balance, and let the key's cache
        remember its images: only a prompt the model read is in its cache."""
        with self.lock:
            state = self._accounts[caller.account]
            state.usage_by_model[model].update(asdict(usage))
            if state.balance is not None:
                state.balance -= usage.prompt_tokens + usage.completion_tokens
            cache = self._caches[caller.key]
            for image in received:
                cache[image.sha256] = None
                cache.move_to_end(image.sha256)
            while len(cache) > CACHE_ENTRIES:
                cache.popitem(last=False)

    def current_latency(self) -> float:
        with self.lock:
            return self.latency

    def configure(
        self,
        *,
        account: str | None,
        latency: float | None,
        limits: dict[str, int],
        faults: dict[str, Any],
    ) -> None:
        """Apply checked changes to one account, or (no `account`) to every one."""
        with self.lock:
            if account is not None and account not in self._accounts:
                names = ", ".join(self._accounts)
                raise SimError(400, f"unknown account; the accounts are {names}")
            if latency is not None:
                self.latency = latency
            chosen = self._accounts.values() if account is None else [self._accounts[account]]
            for state in chosen:
                state.limits = replace(state.limits, **limits)
                for name, value in faults.items():
                    setattr(state, name, value)

    def config(self) -> dict[str, Any]:
        """The latency and the first account's limits at the top (one account's simulator
        reads as it always has), then every account's limits and faults."""
        with self.lock:
            first = next(iter(self._accounts.values()))
            return {
                "latency": self.latency,
                **asdict(first.limits),
                "accounts": {
                    name: {**asdict(state.limits), **{f: getattr(state, f) for f in FAULT_FIELDS}}
                    for name, state in self._accounts.items()
                },
            }

    def record(self, outcome: str, account: str | None) -> None:
        """Count a chat request's outcome, and against its account once its key named one."""
        with self.lock:
            self.requests += 1
            self.by_status[outcome] += 1
            if account is not None:
                self._accounts[account].requests += 1
                self._accounts[account].by_status[outcome] += 1

    def attempt(self, key: str) -> int:
        """Count one more request for `fail_first` under `key`; returns the new count."""
        with self.lock:
            self.attempts[key] += 1
            return self.attempts[key]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            admitted = list(self.admitted)
            accounts = self._accounts.values()
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "rate_limited": sum(state.rate_limited for state in accounts),
                "peak_rpm": _peak(admitted, _WINDOW),
                "peak_in_flight": max(state.peak_in_flight for state in accounts),
                "per_minute": _per_window(admitted, _WINDOW),
                "first_admitted": admitted[0] if admitted else None,
                "last_admitted": admitted[-1] if admitted else None,
                "limits": asdict(next(iter(accounts)).limits),
                "usage": _usage(c for state in accounts for c in state.usage_by_model.values()),
                "accounts": {name: _account_stats(state) for name, state in self._accounts.items()},
            }


def _account_stats(state: _Account) -> dict[str, Any]:
    admitted = list(state.admitted)
    return {
        "requests": state.requests,
        "by_status": dict(state.by_status),
        "rate_limited": state.rate_limited,
        "peak_rpm": _peak(admitted, _WINDOW),
        "peak_in_flight": state.peak_in_flight,
        "per_minute": _per_window(admitted, _WINDOW),
        "limits": asdict(state.limits),
        "usage": _usage(state.usage_by_model.values()),
        "usage_by_model": {model: _usage([c]) for model, c in state.usage_by_model.items()},
    }


def _usage(counters: Iterable[Counter[str]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return {name: total[name] for name in USAGE_FIELDS}


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
