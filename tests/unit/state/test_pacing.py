"""The pacer on a real Redis: fair turns, calls in flight, requests per minute (lost
tickets: tests/unit/test_tickets.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from tests.support import bare_job
from tests.unit.state.clock import Clock
from visionq.accounts import MAIN, Accounts
from visionq.settings import Settings
from visionq.state import keys
from visionq.state.jobs import JobStore
from visionq.state.leases import LeaseKeeper, Leases
from visionq.state.pacing import Lane, Pacer, rpm_window, waiting_jobs

MODEL = "mimo-v2.5"


def _pacer(client: redis.Redis, *, clock: Callable[[], float] = time.time, **budget: int) -> Pacer:
    settings = Settings(**{f"upstream_{k}": {"*": v} for k, v in budget.items()})
    leases = Leases(client, lease=5, clock=clock)
    return Pacer(
        client,
        settings,
        Accounts.from_settings(settings),
        leases,
        LeaseKeeper(interval=1),
        clock=clock,
    )


def _ready(
    client: redis.Redis, pacer: Pacer, tenant: str, due: float = 0.0, lane: Lane = "interactive"
) -> str:
    """A prepared job handed on to the upstream stage, waiting in its tenant's queue."""
    jobs = JobStore(client, ttl=600, queued_grace=300)
    record = bare_job(jobs, tenant=tenant)
    leases = Leases(client, lease=5)
    leases.take(record.id, "prepare")
    jobs.save_images(record.id, [], input_tokens=0)
    leases.release(record.id, look_in=5)
    pacer.offer(record.id, model=MODEL, tenant=tenant, due=due, lane=lane)
    return record.id


def _take(pacer: Pacer) -> str | None:
    with pacer.turn(MODEL) as turn:
        return None if turn is None else turn.job_id


@pytest.mark.parametrize(
    ("rpm", "amount", "seconds"), [(120, 2, 1), (100, 5, 3), (7, 7, 60), (6000, 100, 1)]
)
def test_requests_per_minute_are_spread_over_the_smallest_whole_second_window(
    rpm: int, amount: int, seconds: int
) -> None:
    assert rpm_window(rpm) == (amount, seconds)


def test_turns_go_round_robin_so_a_backlog_does_not_hold_back_another_tenant(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    big = [_ready(redis_db, pacer, "big") for _ in range(5)]
    small = _ready(redis_db, pacer, "small")
    order = [_take(pacer) for _ in range(6)]
    assert order == [big[0], small, *big[1:]]
    assert _take(pacer) is None  # nothing left: the ticket does nothing


def test_a_tenant_back_after_a_pause_is_served_next(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    big = [_ready(redis_db, pacer, "big") for _ in range(4)]
    assert _take(pacer) == big[0]
    returning = _ready(redis_db, pacer, "small")
    assert _take(pacer) == returning


def test_a_job_not_yet_due_waits_and_others_go_first(redis_db) -> None:
    clock = Clock()
    pacer = _pacer(redis_db, clock=clock, rpm=6000)
    later = _ready(redis_db, pacer, "a", due=clock() + 0.5)
    now = _ready(redis_db, pacer, "b")
    assert _take(pacer) == now
    assert _take(pacer) is None
    clock.advance(0.6)
    assert _take(pacer) == later


def test_a_canceled_job_is_passed_over(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    canceled = _ready(redis_db, pacer, "a")
    kept = _ready(redis_db, pacer, "a")
    JobStore(redis_db, ttl=600, queued_grace=300).cancel(canceled, tenant="a")
    assert _take(pacer) == kept
    assert _take(pacer) is None


def test_calls_in_flight_are_capped_across_pacers(redis_db) -> None:
    first, second = _pacer(redis_db, rpm=6000, concurrency=1), _pacer(redis_db, concurrency=1)
    one, two = _ready(redis_db, first, "a"), _ready(redis_db, first, "b")
    got: list[str | None] = []
    with first.turn(MODEL) as turn:
        assert turn is not None and turn.job_id == one
        waiting = threading.Thread(target=lambda: got.append(_take(second)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # the only slot is in use: it waits, it does not call
    waiting.join(5)
    assert got == [two]


def test_the_slot_of_a_dead_holder_frees_itself(redis_db) -> None:
    settings = Settings(upstream_concurrency={"*": 1})
    short = Leases(redis_db, lease=0.3)
    accounts = Accounts.from_settings(settings)
    dying = Pacer(redis_db, settings, accounts, short, LeaseKeeper(interval=10))  # no renewals
    job = _ready(redis_db, dying, "a")
    turn = dying.turn(MODEL)
    assert turn.__enter__().job_id == job  # and the process is killed inside the call
    other = _ready(redis_db, dying, "b")
    assert _take(_pacer(redis_db, concurrency=1)) == other  # once the dead slot expired


def test_requests_per_minute_hold_across_pacers(redis_db) -> None:
    pacers = [_pacer(redis_db, rpm=120), _pacer(redis_db, rpm=120)]  # 2 per second
    for n in range(5):
        _ready(redis_db, pacers[0], f"t{n}")
    started = time.monotonic()
    for n in range(5):
        assert _take(pacers[n % 2]) is not None
    # Calls 3 and 5 each had to wait for a one-second window to have room.
    assert time.monotonic() - started >= 2.0


def test_a_pause_after_a_429_holds_every_turn(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    _ready(redis_db, pacer, "a")
    pacer.pause(MODEL, MAIN, 1.0)
    started = time.monotonic()
    assert _take(pacer) is not None
    assert time.monotonic() - started >= 0.9


def test_a_job_bigger_than_the_token_budget_goes_alone(redis_db) -> None:
    pacer = _pacer(redis_db, tpm=1000)
    pacer.spend_tokens(MODEL, MAIN, 5000)  # capped at the whole budget, so it does not wait forever
    second = threading.Thread(target=pacer.spend_tokens, args=(MODEL, MAIN, 10), daemon=True)
    second.start()
    second.join(0.5)
    assert second.is_alive()  # the minute's tokens are spent
    redis_db.flushdb()  # a new minute, as far as the budget can tell
    second.join(3)
    assert not second.is_alive()


def test_interactive_jobs_go_before_batch_lines_of_any_tenant(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    lines = [_ready(redis_db, pacer, "big", lane="batch") for _ in range(3)]
    mine = _ready(redis_db, pacer, "big")
    other = _ready(redis_db, pacer, "small")
    assert waiting_jobs(redis_db) == {MODEL: 5}
    assert [_take(pacer) for _ in range(2)] == [mine, other]
    assert [_take(pacer) for _ in range(3)] == lines
    assert _take(pacer) is None


def test_two_tenants_batch_lines_take_turns(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000)
    a = [_ready(redis_db, pacer, "a", lane="batch") for _ in range(3)]
    b = [_ready(redis_db, pacer, "b", lane="batch") for _ in range(3)]
    assert [_take(pacer) for _ in range(6)] == [a[0], b[0], a[1], b[1], a[2], b[2]]


def test_batch_lines_are_sent_evenly_and_the_next_room_goes_to_an_interactive_job(
    redis_db,
) -> None:
    pacer = _pacer(redis_db, rpm=120)  # 2 a second, one every 0.5 s for batch lines
    lines = [_ready(redis_db, pacer, "big", lane="batch") for _ in range(3)]
    started = time.monotonic()
    assert _take(pacer) == lines[0]
    assert _take(pacer) == lines[1]
    # The window had room for both at once; the batch lane spaced them instead.
    assert time.monotonic() - started >= 0.2
    mine = _ready(redis_db, pacer, "small")
    assert _take(pacer) == mine  # the window's next room, before the waiting line
    assert time.monotonic() - started >= 0.9
    assert _take(pacer) == lines[2]


def test_a_batch_line_leaves_one_slot_free_for_an_interactive_job(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=6000, concurrency=2)
    lines = [_ready(redis_db, pacer, "big", lane="batch") for _ in range(2)]
    got: list[str | None] = []
    with pacer.turn(MODEL) as turn:
        assert turn is not None and turn.job_id == lines[0]
        mine = _ready(redis_db, pacer, "small")
        assert _take(_pacer(redis_db, rpm=6000, concurrency=2)) == mine
        waiting = threading.Thread(target=lambda: got.append(_take(pacer)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # one slot is free, but not for a batch line
    waiting.join(5)
    assert got == [lines[1]]


def test_a_batch_line_passed_over_costs_no_request(redis_db) -> None:
    pacer = _pacer(redis_db, rpm=60)  # one a second
    canceled, kept = (_ready(redis_db, pacer, "a", lane="batch") for _ in range(2))
    JobStore(redis_db, ttl=600, queued_grace=300).cancel(canceled, tenant="a")
    assert _take(pacer) == kept
    assert redis_db.zcard(keys.pace_account(MODEL, MAIN, keys.PACE_REQUESTS)) == 1
    # The lane's next request is one interval away, not two.
    due = float(redis_db.get(keys.pace_account(MODEL, MAIN, keys.PACE_BATCH_DUE)))
    assert due - time.time() <= 1.0


def _accounts_pacer(client: redis.Redis, *accounts: dict, **settings: object) -> Pacer:
    """A pacer over named accounts (API.md, "Upstream accounts")."""
    given = [{"api_key": f"key-{a['name']}", **a} for a in accounts]
    config = Settings.model_validate({"upstream_accounts": given, **settings})
    leases = Leases(client, lease=5)
    return Pacer(client, config, Accounts.from_settings(config), leases, LeaseKeeper(interval=1))


def test_each_account_has_its_own_budget_so_two_carry_twice_the_calls(redis_db) -> None:
    pacer = _accounts_pacer(
        redis_db,
        {"name": "a", "concurrency": 1},
        {"name": "b", "concurrency": 1},
        upstream_rpm={"*": 6000},
    )
    jobs = [_ready(redis_db, pacer, f"t{n}") for n in range(3)]
    with pacer.turn(MODEL) as first, pacer.turn(MODEL) as second:
        assert first is not None and second is not None
        assert {first.account, second.account} == {"a", "b"}
        assert {first.job_id, second.job_id} == set(jobs[:2])
        third = threading.Thread(target=lambda: _take(pacer), daemon=True)
        third.start()
        third.join(0.5)
        assert third.is_alive()  # both accounts' one slot is in use
    third.join(5)
    assert not third.is_alive()


def test_a_tenant_goes_back_to_the_account_that_served_it_last(redis_db) -> None:
    pacer = _accounts_pacer(redis_db, {"name": "a"}, {"name": "b"}, upstream_rpm={"*": 6000})
    served = []
    for _ in range(4):
        _ready(redis_db, pacer, "cached")
        with pacer.turn(MODEL) as turn:
            assert turn is not None
            served.append(turn.account)
    assert len(set(served)) == 1  # its prompt cache is on that key


def test_a_pinned_tenant_waits_for_its_own_account_and_others_go_past_it(redis_db) -> None:
    pacer = _accounts_pacer(
        redis_db,
        {"name": "own", "concurrency": 1, "tenants": ["pinned"]},
        {"name": "shared", "concurrency": 4},
        upstream_rpm={"*": 6000},
    )
    first, second = _ready(redis_db, pacer, "pinned"), _ready(redis_db, pacer, "pinned")
    other = _ready(redis_db, pacer, "zed")  # after "pinned" in the rotation
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.account) == (first, "own")
        with pacer.turn(MODEL) as next_turn:
            # The pinned tenant's second job waits for its key; the shared one is free.
            assert next_turn is not None and (next_turn.job_id, next_turn.account) == (
                other,
                "shared",
            )
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.account) == (second, "own")


def test_an_account_out_of_rotation_is_passed_over_and_probed_once_its_time_is_up(
    redis_db,
) -> None:
    pacer = _accounts_pacer(redis_db, {"name": "a"}, {"name": "b"}, upstream_rpm={"*": 6000})
    pacer.bench("a", "auth", confirmed=True, seconds=60)
    assert pacer.out_of_rotation() == {"a": "auth"}
    for _ in range(3):
        _ready(redis_db, pacer, "t")
        with pacer.turn(MODEL) as turn:
            assert turn is not None and turn.account == "b" and not turn.probe
    pacer.bench("a", "auth", confirmed=True, seconds=0)  # its time is up
    pacer.pause(MODEL, "b", 60)  # so that only "a" could serve
    _ready(redis_db, pacer, "t")
    _ready(redis_db, pacer, "t")
    with pacer.turn(MODEL) as probe:
        assert probe is not None and probe.account == "a" and probe.probe
        waiting = threading.Thread(target=lambda: _take(pacer), daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # the probe holds its account alone
    pacer.restore("a")  # as the worker does when the probe succeeds
    waiting.join(6)
    assert not waiting.is_alive()
    assert pacer.out_of_rotation() == {}


def test_a_job_only_faulty_accounts_could_serve_is_refused_with_their_fault(redis_db) -> None:
    pacer = _accounts_pacer(
        redis_db,
        {"name": "own", "tenants": ["pinned"]},
        {"name": "shared"},
        upstream_rpm={"*": 6000},
    )
    pacer.bench("own", "funds", confirmed=True, seconds=60)
    refused = _ready(redis_db, pacer, "pinned")
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.refused) == (refused, "funds")
    served = _ready(redis_db, pacer, "other")
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.account, turn.refused) == (
            served,
            "shared",
            None,
        )


def test_a_suspected_402_makes_jobs_wait_not_fail(redis_db) -> None:
    pacer = _accounts_pacer(redis_db, {"name": "a", "concurrency": 8}, upstream_rpm={"*": 6000})
    pacer.bench("a", "funds", confirmed=False, seconds=0.5)
    assert pacer.lower_concurrency(MODEL, "a", seconds=60) == 4
    assert pacer.lower_concurrency(MODEL, "a", seconds=60) == 2
    job = _ready(redis_db, pacer, "t")
    started = time.monotonic()
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.refused, turn.probe) == (job, None, True)
    assert time.monotonic() - started >= 0.4
    # A suspicion never overwrites a confirmed fault.
    pacer.bench("a", "auth", confirmed=True, seconds=60)
    pacer.bench("a", "funds", confirmed=False, seconds=1)
    assert pacer.out_of_rotation() == {"a": "auth"}


def test_a_tenant_no_account_serves_is_refused(redis_db) -> None:
    pacer = _accounts_pacer(redis_db, {"name": "own", "tenants": ["pinned"]})
    job = _ready(redis_db, pacer, "stranger")
    with pacer.turn(MODEL) as turn:
        assert turn is not None and (turn.job_id, turn.refused) == (job, "unserved")
