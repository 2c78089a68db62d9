"""Shared pacing of the upstream: one budget per account and model for every worker on
every host, and a fair turn for every tenant (API.md, "Pacing the upstream" and "Upstream
accounts").

MiMo counts requests per minute, tokens per minute and calls in flight per model over the
whole account, so each account's budget lives in Redis:

- requests per minute: a moving window cut into the smallest whole-second window that
  divides the minute (120 RPM is 2 per second, 100 RPM is 5 per 3 seconds), so calls are
  spread over the minute instead of bursting a minute's worth at once;
- tokens per minute: `limits`' sliding-window counter, charged with the job's counted
  tokens (a moving window would keep one list entry per token);
- calls in flight: a sorted set of slots, each with an expiry that the worker's lease
  keeper pushes forward, so a killed worker's slot frees itself within a lease.

A turn takes room for its call and its job in one step (`pacing/admit`), so no job is
taken that must then wait for the budget while a more urgent one arrives. The room is on
one of the accounts that serve the job's tenant (its own when it is pinned, else the
shared ones): the one that served the tenant last while it has room (MiMo's prompt cache
is per key), else the one with the most room, so N accounts carry N budgets.

An account that answers 401/403 is out of rotation (`bench`) for the probe interval; one
whose 402 may have been a burst of concurrent calls (MiMo answers those with "insufficient
account funds", its issue #99) is out for a moment, with fewer calls in flight for a
minute. Either way, once its time is up one call probes it: success brings it back, the
same answer again confirms the fault. A job that only accounts with a confirmed fault
could serve is refused (the worker fails it with that fault); the jobs of a tenant with
another account go there, without counting an attempt.

Fairness cannot come from the broker: its queue is first in, first out, and a tenant's
10,000 messages would sit in front of another tenant's one. So a ready job waits in its
tenant's queue here, and the Celery message for the upstream stage is only a ticket:
whichever ticket gets a turn takes the next job round-robin across tenants, the tenant
served longest ago first. Batch lines (`lane="batch"`) wait in a second rotation of their
own and are taken only when no interactive job is due; among batch lines the tenants take
turns in the same way. Batch lines are also sent evenly, one per interval of the budget
(60 / RPM seconds), never in a burst, and leave one slot for calls in flight free: while a
batch of 50,000 lines keeps the budget full, an interactive job finds room within one
interval. Every ready job has a ticket; a ticket that finds no due job
(its job went with an earlier ticket) does nothing. Within one worker process one thread
at a time waits for room, the others behind a lock, so the budget is polled by each
process rather than by each of its threads.

A ticket that is waiting for its turn is visible: it registers in the model's `tickets`
set with an expiry when it must wait (behind another thread of its process, or for room
in the budget; a ticket that takes its job at once never registers), the process's lease
keeper pushes the expiry forward (one call for all of the process's tickets), and it
leaves the set when it takes a job (which then has a lease of its own) or its turn ends.
Both steps ride on calls the turn makes anyway. A worker killed while its tickets wait
leaves registrations that expire within a lease; the sweeper (`Pacer.tickets`,
`TicketAudit`) then sends as many tickets again, and, as a net for tickets lost before
they ever registered, tickets for any due jobs beyond the live tickets and those still in
the broker's list.

This module owns every key under `keys.PACE_PREFIX` and `keys.ACCOUNT_PREFIX` and the
`limits` library's token window (`keys.PACE_LIMITS_PREFIX`); nothing else writes them.
The lease sweep (`leases/sweep`) reads a model's queues, to leave a job waiting its turn
to its ticket. A turn takes its
job through `Leases.take`, whose script writes the job's lease, not this module.
The token window keeps the `limits` library's own clock (the host's); the rest reads
`clock`, which tests replace (give the `Leases` the same one).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import redis
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from visionq.accounts import MAIN, Accounts
from visionq.ops import metrics
from visionq.settings import Settings
from visionq.state import keys
from visionq.state.leases import LeaseKeeper, Leases
from visionq.state.records import JobRecord
from visionq.state.redis import redis_errors, script

log = logging.getLogger(__name__)

Lane = Literal["interactive", "batch"]
#: Why an account is out of rotation.
Fault = Literal["auth", "funds"]
#: How often a waiting worker looks for a free slot again.
SLOT_POLL_SECONDS = 0.05
#: Tenants a turn looks through for one whose next job is due (the rest wait a backoff).
_TENANTS_PER_TURN = 100


#: The longest a turn sleeps before it looks at the budget again.
_LONGEST_WAIT = 5.0
#: Beyond the minute, how long a request still counts against the account's minute: the
#: spread of the time calls take from admission to the upstream's door (reading the body,
#: connecting). Two calls admitted a minute apart can otherwise arrive 59.99 s apart and
#: be one too many in the upstream's window; this costs 0.8 % of the rate.
MINUTE_GUARD = 0.5
#: How far the batch lane may run ahead of even spacing: half an interval, at least this
#: many seconds. A turn that wakes that much early is let through, so one that wakes a
#: little late loses nothing and batch lines alone spend the whole budget, never two at
#: once.
_BATCH_AHEAD_LEAST = 0.01


def rpm_window(rpm: int) -> tuple[int, int]:
    """`rpm` per minute as requests per the smallest whole-second window that divides the
    minute: calls are spread over the minute instead of bursting a minute's worth at once."""
    common = math.gcd(rpm, 60)
    return rpm // common, 60 // common


@dataclass(frozen=True)
class Turn:
    """A job taken for the upstream stage, with room for it in the budget."""

    job_id: str
    attempt: int
    #: The job as the lease was taken.
    record: JobRecord
    #: Unix time since when the job has been ready for this attempt (prepared, or due).
    ready_since: float
    lane: Lane = "interactive"
    #: The account whose budget the call spends.
    account: str = MAIN
    #: The call probes an account that was out of rotation.
    probe: bool = False
    #: Set when no account of the job's tenant can serve it (`Fault`, or "unserved"):
    #: no room was taken, and the job is to fail.
    refused: str | None = None
    #: With `refused`: what the account last answered (401, 402...), if known.
    refused_status: int | None = None


@dataclass(frozen=True)
class Tickets:
    """One model's tickets against its due jobs, as the sweeper sees them in one round."""

    model: str
    #: Jobs due now in the model's queues.
    due: int
    #: Tickets waiting for a turn in a live worker.
    live: int
    #: Registrations that expired since the last round: their worker died waiting.
    lost: int
    #: Tickets in the broker's list, of every model.
    queued: int

    @property
    def short(self) -> int:
        """Due jobs beyond every ticket that can be counted for them."""
        return max(0, self.due - self.live - self.queued)


class TicketAudit:
    """How many tickets the sweeper sends each model, from what it counted over time.

    A ticket lost while it waited is sent again at once: its registration expired, so its
    worker is dead. Due jobs beyond every ticket counted (tickets lost before they
    registered: a retry's countdown held by a dead worker, kombu's pop-then-record window)
    are sent tickets only once the shortfall has lasted `hold` seconds (a job lease), the
    fewest seen meanwhile: a ticket goes uncounted for an instant on its way (taken from
    the broker but not yet started), and while tickets flow some always are. The broker's
    list counts for every model, so with another model's tickets queued a shortfall may
    show late; a lost registration never does.
    """

    def __init__(self, *, hold: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold = hold
        self._clock = clock
        #: Per model short of tickets: since when, continuously, and the fewest missing.
        self._short: dict[str, tuple[float, int]] = {}

    def missing(self, counts: list[Tickets]) -> dict[str, int]:
        now = self._clock()
        out: dict[str, int] = {}
        for c in counts:
            since, fewest = self._short.get(c.model, (now, c.short))
            fewest = min(fewest, c.short)
            lasting = 0
            if fewest == 0:
                self._short.pop(c.model, None)
            elif now - since >= self._hold:
                lasting = fewest
                self._short.pop(c.model)  # sent: counted afresh from the next round
            else:
                self._short[c.model] = (since, fewest)
            if sent := max(min(c.lost, c.due), lasting):
                out[c.model] = sent
        for model in self._short.keys() - {c.model for c in counts}:
            del self._short[model]  # nothing waits for it any more
        return out


class Pacer:
    """The shared budget and the tenants' turns, for one process."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        accounts: Accounts,
        leases: Leases,
        keeper: LeaseKeeper,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._settings = settings
        self._accounts = accounts
        #: Per model, the accounts as `pacing/admit` reads them.
        self._admit_config: dict[str, str] = {}
        self._leases = leases
        self._keeper = keeper
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=keys.PACE_LIMITS_PREFIX
        )
        self._tokens = SlidingWindowCounterRateLimiter(storage)
        self._enter = script(client, "pacing/enter")
        self._offer = script(client, "pacing/offer")
        self._admit = script(client, "pacing/admit")
        self._refund = script(client, "pacing/refund")
        self._bench = script(client, "pacing/bench")
        self._tickets_script = script(client, "pacing/tickets")
        self._gates: dict[str, threading.Lock] = {}
        self._gates_lock = threading.Lock()
        #: Per model, this process's tickets waiting for a turn (renewed together).
        self._tickets: dict[str, set[str]] = {}
        self._tickets_lock = threading.Lock()

    def offer(
        self, job_id: str, *, model: str, tenant: str, due: float = 0.0, lane: Lane = "interactive"
    ) -> None:
        """Put a ready job in its tenant's queue of its lane; the caller sends it a ticket."""
        batch = lane == "batch"
        offer_keys = [
            keys.pace(model, keys.PACE_BATCH_TENANTS if batch else keys.PACE_TENANTS),
            keys.pace_queue(model, tenant, batch=batch),
            keys.PACE_MODELS,
            keys.pace(model, keys.PACE_SINCE),
        ]
        args: list[str | float] = [job_id, due, tenant, model, max(due, self._clock())]
        with redis_errors():
            self._offer(keys=offer_keys, args=args)

    def pause(self, model: str, account: str, seconds: float) -> None:
        """A 429 came anyway (another client on the account?): nobody calls the account's
        model for a while."""
        until = self._clock() + seconds
        paused = keys.pace_account(model, account, keys.PACE_PAUSED)
        with redis_errors():
            current = float(self._redis.get(paused) or 0)
            if until > current:
                self._redis.set(paused, until, exat=int(until) + 1)

    def bench(
        self, account: str, fault: Fault, *, confirmed: bool, seconds: float, status: int = 0
    ) -> None:
        """Take `account` out of rotation for `seconds`; then one call probes it. `status`:
        what it answered, for the jobs refused meanwhile."""
        until = self._clock() + seconds
        keep = max(3600, math.ceil(10 * self._settings.account_probe_interval))
        with redis_errors():
            self._bench(
                keys=[keys.account(account)],
                args=[until, fault, "1" if confirmed else "0", keep, status],
            )

    def lower_concurrency(self, model: str, account: str, *, seconds: int) -> int:
        """Halve the calls `account` may have in flight for `model`, for `seconds` (a 402
        that may have been a burst); the new cap."""
        cap = keys.pace_account(model, account, keys.PACE_CAP)
        budget = self._accounts.get(account).budget(model).concurrency
        with redis_errors():
            current = int(self._redis.get(cap) or budget)
            lowered = max(1, min(current, budget) // 2)
            self._redis.set(cap, lowered, ex=seconds)
        return lowered

    def probe_again(self, account: str) -> None:
        """A probe was never sent (its job could not be taken), or got no answer about the
        key (a time-out, a 5xx): the next call probes."""
        health = keys.account(account)
        with redis_errors():
            if self._redis.exists(health):
                self._redis.hset(health, "until", self._clock())

    def restore(self, account: str) -> None:
        """A probe succeeded: the account is back in rotation."""
        with redis_errors():
            self._redis.delete(keys.account(account))

    def out_of_rotation(self) -> dict[str, str]:
        return out_of_rotation(self._redis, [account.name for account in self._accounts])

    @contextmanager
    def turn(self, model: str) -> Iterator[Turn | None]:
        """Wait for room in `model`'s budget, then take the next job fairly.

        Yields None when no job is due. The slot and the job's lease are held, and renewed,
        until the block ends; releasing the job (or finishing it) is the caller's part.
        A ticket that waits (behind another thread of this process, or for room) is
        registered as waiting until it takes a job (see the module's doc); one that takes
        its job at once never needs to be.
        """
        ticket = f"ticket_{uuid.uuid4().hex}"
        taken: tuple[Turn, str] | None = None
        gate = self._gate(model)
        if not gate.acquire(blocking=False):
            # Another thread of this process has the turn: wait behind it, registered.
            with redis_errors():
                anything_ready = self._enter(
                    keys=[
                        keys.pace(model, keys.PACE_TENANTS),
                        keys.pace(model, keys.PACE_TICKETS),
                        keys.pace(model, keys.PACE_BATCH_TENANTS),
                    ],
                    args=[ticket, self._clock() + self._leases.lease],
                )
            if not anything_ready:
                yield None
                return
            self._hold_ticket(model, ticket)
            gate.acquire()
        try:
            try:
                taken = self._take_next(model, ticket)
            finally:
                gate.release()
            if taken is not None:
                turn, slot = taken
                if slot:
                    slots = keys.pace_account(model, turn.account, keys.PACE_SLOTS)
                    self._keeper.hold(slot, lambda: self._renew_slot(slots, slot))
                self._keeper.hold(turn.job_id, lambda: self._leases.renew(turn.job_id))
            yield None if taken is None else taken[0]
        finally:
            self._leave(model, ticket, taken)

    def spend_tokens(self, model: str, account: str, tokens: int) -> None:
        """Wait until the tokens-per-minute budget of `account` for `model` has room for
        `tokens`, and take it."""
        tpm = self._accounts.get(account).budget(model).tpm
        item = RateLimitItemPerMinute(tpm, namespace=keys.TPM_NAMESPACE)
        cost = max(1, min(tokens, tpm))  # a job bigger than the budget goes alone
        waits = _Waits(model)
        window = f"{model}:{account}"
        while True:
            with redis_errors():
                if self._tokens.hit(item, window, cost=cost):
                    return
                reset = self._tokens.get_window_stats(item, window).reset_time
            waits.held_by("tpm")
            time.sleep(min(1.0, max(0.05, reset - time.time())))

    def tickets(self, *, queued: int) -> list[Tickets]:
        """Per model with jobs waiting, its tickets against its due jobs (`TicketAudit`
        decides what to send); `queued`: the upstream messages waiting in the broker
        (`Broker.waiting`), counted just before. Expired registrations are removed, so
        each lost ticket is reported once."""
        with redis_errors():
            flat = self._tickets_script(
                keys=[keys.PACE_MODELS],
                args=[
                    self._clock(),
                    keys.PACE_PREFIX,
                    keys.PACE_TICKETS,
                    keys.PACE_TENANTS,
                    keys.PACE_QUEUE,
                    keys.PACE_BATCH_TENANTS,
                    keys.PACE_BATCH_QUEUE,
                ],
            )
        return [
            Tickets(flat[i].decode(), int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]), queued)
            for i in range(0, len(flat), 4)
        ]

    def _gate(self, model: str) -> threading.Lock:
        with self._gates_lock:
            return self._gates.setdefault(model, threading.Lock())

    def _renew_slot(self, slots: str, slot: str) -> None:
        with redis_errors():
            self._redis.zadd(slots, {slot: self._clock() + self._leases.lease}, xx=True)

    def _hold_ticket(self, model: str, ticket: str) -> None:
        with self._tickets_lock:
            self._tickets.setdefault(model, set()).add(ticket)
        self._keeper.hold(keys.pace(model, keys.PACE_TICKETS), lambda: self._renew_tickets(model))

    def _drop_ticket(self, model: str, ticket: str) -> bool:
        """Stop renewing the ticket's registration; whether it had one."""
        with self._tickets_lock:
            held = self._tickets.get(model, set())
            registered = ticket in held
            held.discard(ticket)
            return registered

    def _renew_tickets(self, model: str) -> None:
        """One call for every ticket of `model` this process holds; XX: a ticket that took
        a job or ended meanwhile is not brought back."""
        with self._tickets_lock:
            held = list(self._tickets.get(model, ()))
        if held:
            until = self._clock() + self._leases.lease
            with redis_errors():
                self._redis.zadd(
                    keys.pace(model, keys.PACE_TICKETS), dict.fromkeys(held, until), xx=True
                )

    def _config(self, model: str) -> str:
        """The accounts' budgets for `model` as `pacing/admit` reads them (built once)."""
        if model not in self._admit_config:
            names = [account.name for account in self._accounts]
            position = {name: i for i, name in enumerate(names, 1)}
            budgets = []
            for account in self._accounts:
                budget = account.budget(model)
                per_window, window = rpm_window(budget.rpm)
                interval = 60 / budget.rpm
                budgets.append(
                    {
                        "n": account.name,
                        "c": budget.concurrency,
                        "pw": per_window,
                        "w": window,
                        "pm": budget.rpm,
                        "m": 60 + MINUTE_GUARD,
                        "i": interval,
                        "ah": max(interval / 2, _BATCH_AHEAD_LEAST),
                    }
                )
            shared = [position[name] for name in self._accounts.shared]
            pinned = {
                tenant: [position[name] for name in own]
                for tenant, own in self._accounts.pinned.items()
            }
            self._admit_config[model] = json.dumps({"a": budgets, "s": shared, "p": pinned})
        return self._admit_config[model]

    def _take_next(self, model: str, ticket: str) -> tuple[Turn, str] | None:
        """The next job with a slot and a request for it on one of its tenant's accounts
        (`pacing/admit`), and the slot ("" for a refused job, which takes no room)."""
        admit_keys = [
            keys.pace(model, part)
            for part in (
                keys.PACE_TENANTS,
                keys.PACE_SERVED,
                keys.PACE_SINCE,
                keys.PACE_TICKETS,
                keys.PACE_BATCH_TENANTS,
                keys.PACE_AFFINITY,
            )
        ]
        probe_hold = self._settings.upstream_timeout + self._settings.upstream_connect_timeout
        waits = _Waits(model)
        while True:
            now, slot = self._clock(), f"slot_{uuid.uuid4().hex}"
            with redis_errors():
                head = self._admit(
                    keys=admit_keys,
                    args=[
                        now,
                        keys.pace(model, keys.PACE_QUEUE),
                        _TENANTS_PER_TURN,
                        ticket,
                        keys.pace(model, keys.PACE_BATCH_QUEUE),
                        slot,
                        now + self._leases.lease,
                        keys.pace_account(model, ""),
                        keys.ACCOUNT_PREFIX,
                        self._config(model),
                        probe_hold,
                    ],
                )
            if head is None:
                return None
            if head[0] == b"wait":
                # `pacing/admit` registered the ticket as waiting.
                self._hold_ticket(model, ticket)
                waits.held_by(head[2].decode())
                # A batch line's wait is cut short: an interactive job may arrive meanwhile.
                longest = SLOT_POLL_SECONDS if head[3] == b"batch" else _LONGEST_WAIT
                time.sleep(min(longest, max(0.005, float(head[1]))))
                continue
            self._drop_ticket(model, ticket)
            job_id, lane = head[0].decode(), cast(Lane, head[2].decode())
            account = head[3].decode()
            refused = head[5].decode() if head[4] == b"refused" else None
            refused_status = int(head[6]) if refused and len(head) > 6 and int(head[6]) else None
            taken = self._leases.take(job_id, "upstream")
            if taken is not None:
                turn = Turn(
                    job_id,
                    taken.attempt,
                    taken.record,
                    ready_since=float(head[1]),
                    lane=lane,
                    account=account or MAIN,
                    probe=head[4] == b"1",
                    refused=refused,
                    refused_status=refused_status,
                )
                return turn, "" if refused else slot
            if refused:
                continue
            # Not taken: canceled, deleted, finished, or a live worker holds it.
            interval = 60 / self._accounts.get(account).budget(model).rpm
            with redis_errors():
                self._refund(
                    keys=[
                        keys.pace_account(model, account, part)
                        for part in (keys.PACE_SLOTS, keys.PACE_REQUESTS, keys.PACE_BATCH_DUE)
                    ],
                    args=[slot, interval if lane == "batch" else 0],
                )
            if head[4] == b"1":
                self.probe_again(account)

    def _leave(self, model: str, ticket: str, taken: tuple[Turn, str] | None) -> None:
        """Free the slot and, if it took no job, unregister the ticket: at most one round
        trip (none for a ticket that found no job without waiting)."""
        registered = self._drop_ticket(model, ticket)
        pipe = self._redis.pipeline(transaction=False)
        if taken is None:
            if not registered:
                return
            pipe.zrem(keys.pace(model, keys.PACE_TICKETS), ticket)
        else:
            turn, slot = taken
            self._keeper.drop(turn.job_id)
            if slot:
                self._keeper.drop(slot)
                pipe.zrem(keys.pace_account(model, turn.account, keys.PACE_SLOTS), slot)
        try:
            with redis_errors():
                pipe.execute()
        except Exception:  # both expire by themselves within a lease
            log.warning("could not free an upstream slot or ticket of %s", model, exc_info=True)


class _Waits:
    """Counts one wait per limit that held a call, however many times the loop polls."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._seen: set[str] = set()

    def held_by(self, limit: str) -> None:
        if limit not in self._seen:
            self._seen.add(limit)
            metrics.PACING_WAITS.labels(self._model, limit).inc()


def waiting_jobs(client: redis.Redis) -> dict[str, int]:
    """Per model, the prepared jobs waiting in the pacer's queues (due now or later)."""
    with redis_errors():
        flat = script(client, "pacing/waiting")(
            keys=[keys.PACE_MODELS],
            args=[
                keys.PACE_PREFIX,
                keys.PACE_TENANTS,
                keys.PACE_QUEUE,
                keys.PACE_BATCH_TENANTS,
                keys.PACE_BATCH_QUEUE,
            ],
        )
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def out_of_rotation(client: redis.Redis, names: list[str]) -> dict[str, str]:
    """Of the accounts `names`, those out of rotation now or waiting for their probe, with
    why (`Fault`)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.account(name), "reason")
    with redis_errors():
        reasons = pipe.execute()
    return {name: r.decode() for name, r in zip(names, reasons, strict=True) if r}
