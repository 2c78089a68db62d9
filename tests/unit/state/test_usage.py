"""Usage counters on a real Redis: a finish adds its job's usage once, to its tenant's
hour, model and account; the report sums hours into buckets; cost is worked out once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.support import bare_job
from visionq import usage
from visionq.errors import InvalidImage, QuotaExceeded
from visionq.settings import Price, Quota, Settings
from visionq.state import keys
from visionq.state.jobs import JobStore
from visionq.state.usage import Quotas, UsageStore
from visionq.usage_report import usage_report

PRICE = Price(input=0.4, cached_input=0.01, output=2.0)
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "prompt_tokens_details": {"cached_tokens": 600, "image_tokens": 700},
    "completion_tokens_details": {"reasoning_tokens": 50},
}


@pytest.fixture
def store(redis_db: redis.Redis) -> JobStore:
    return JobStore(redis_db, ttl=120, queued_grace=300, usage_retention=3600)


def _result(tokens: dict[str, object]) -> dict[str, object]:
    return {"content": "x", "usage": tokens, "response": {}}


def test_counters_take_mimos_details_and_price_cached_input_apart() -> None:
    counted = usage.counters(USAGE, status="succeeded", image_tokens=5, price=PRICE)
    assert counted == {
        "jobs_succeeded": 1,
        "requests": 1,
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "reasoning_tokens": 50,
        "cached_tokens": 600,
        "image_tokens": 700,  # the upstream's own count wins over ours
        # 400 new input tokens at 0.4, 600 cached at 0.01, 200 output at 2.0, per million
        "cost_nanos": 400 * 400 + 600 * 10 + 200 * 2000,
    }
    bare = usage.counters({"prompt_tokens": 10}, status="succeeded", image_tokens=5, price=None)
    assert bare == {"jobs_succeeded": 1, "requests": 1, "prompt_tokens": 10, "image_tokens": 5}
    assert usage.counters(None, status="failed", image_tokens=5, price=PRICE) == {"jobs_failed": 1}


def test_a_success_is_counted_once_however_many_workers_finish_it(
    redis_db: redis.Redis, store: JobStore
) -> None:
    record = bare_job(store, tenant="acme")
    outcomes: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(
                store.succeed(record.id, _result(USAGE), account="a", price=PRICE)
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, False, False, True]
    rows = list(UsageStore(redis_db).rows(["acme"], start=time.time() - 3600, end=time.time()))
    assert [(r.tenant, r.model, r.account) for r in rows] == [("acme", "mimo-v2.5", "a")]
    assert rows[0].counters["prompt_tokens"] == 1000
    assert rows[0].counters["jobs_succeeded"] == 1
    job = store.load(record.id)
    assert job is not None and job.fields["account"] == "a"
    assert job.fields["cost"] == usage.dollars(rows[0].counters["cost_nanos"])
    # The quota's day and month count the prompt and completion tokens.
    today = time.strftime("%Y%m%d", time.gmtime())
    assert UsageStore(redis_db).tokens("acme", today) == 1200
    assert UsageStore(redis_db).tokens("acme", today[:6]) == 1200
    assert redis_db.ttl(keys.usage("acme", time.strftime("%Y%m%d%H", time.gmtime()))) <= 3600


def test_failures_and_cancels_count_as_jobs_without_tokens(
    redis_db: redis.Redis, store: JobStore
) -> None:
    failed, canceled = bare_job(store, tenant="acme"), bare_job(store, tenant="acme")
    assert store.fail(failed.id, InvalidImage("bad"))
    store.cancel(canceled.id, tenant="acme")
    [row] = UsageStore(redis_db).rows(["acme"], start=time.time() - 60, end=time.time() + 1)
    assert row.account == ""
    assert row.counters == {"jobs_failed": 1, "jobs_canceled": 1}
    assert UsageStore(redis_db).tenants() == ["acme"]


def test_the_report_sums_hours_into_days_and_models_and_fills_empty_days(
    redis_db: redis.Redis, store: JobStore
) -> None:
    for model, account in (("mimo-v2.5", "a"), ("mimo-v2.5", "b"), ("mimo-v2-omni", "a")):
        record = bare_job(store, tenant="acme", model=model)
        store.succeed(record.id, _result(USAGE), account=account, price=PRICE)
    now = time.time()
    start = now - 3 * 86400
    rows = list(UsageStore(redis_db).rows(["acme"], start=start, end=now + 1))
    by_day = usage_report(rows, start=start, end=now + 1, group_by=("day",), priced=True)
    assert len(by_day["data"]) in (4, 5)  # every day of the range, empty ones too
    assert [b["prompt_tokens"] for b in by_day["data"]][-1] == 3000
    assert sum(b["requests"] for b in by_day["data"]) == 3
    assert by_day["total"]["jobs"] == {"succeeded": 3, "failed": 0, "canceled": 0}
    assert by_day["total"]["cost"] == pytest.approx(3 * usage.dollars(566_000))
    by_model = usage_report(rows, start=start, end=now + 1, group_by=("model",), priced=False)
    assert {b["model"]: b["requests"] for b in by_model["data"]} == {
        "mimo-v2.5": 2,
        "mimo-v2-omni": 1,
    }
    assert "cost" not in by_model["total"]
    by_account = usage_report(rows, start=start, end=now + 1, group_by=("account",), priced=True)
    assert {b["account"]: b["completion_tokens"] for b in by_account["data"]} == {
        "a": 400,
        "b": 200,
    }


def test_prices_are_read_in_both_forms() -> None:
    compact = Settings.from_env({"VISIONQ_PRICES": "mimo-v2.5=0.4/0.01/2"})
    as_json = Settings.from_env(
        {"VISIONQ_PRICES": '{"mimo-v2.5": {"input": 0.4, "cached_input": 0.01, "output": 2}}'}
    )
    assert compact.prices == as_json.prices == {"mimo-v2.5": PRICE}


def test_a_quota_refuses_new_work_once_spent_until_the_periods_end(
    redis_db: redis.Redis, store: JobStore
) -> None:
    quotas = Quotas(redis_db, {"*": Quota(1000, "day"), "free": None})
    quotas.check("acme", now=time.time())  # nothing used yet
    record = bare_job(store, tenant="acme")
    store.succeed(record.id, _result({"prompt_tokens": 900, "completion_tokens": 100}))
    with pytest.raises(QuotaExceeded) as refused:
        quotas.check("acme", now=time.time())
    _, ends = usage.period(Quota(1000, "day"), time.time())
    assert refused.value.retry_after == pytest.approx(ends - time.time(), abs=2)
    quotas.check("free", now=time.time())  # a tenant without a quota


def test_calls_racing_for_the_last_of_a_quota_get_no_more_than_it_holds(
    redis_db: redis.Redis, store: JobStore
) -> None:
    quotas = Quotas(redis_db, {"acme": Quota(1000, "month")})
    record = bare_job(store, tenant="acme")
    store.succeed(record.id, _result({"prompt_tokens": 600, "completion_tokens": 0}))
    held: list[str] = []

    def call(n: int) -> None:
        try:
            quotas.hold("acme", f"job{n}", 100, now=time.time(), lease=60)
            held.append(f"job{n}")
        except QuotaExceeded:
            pass

    threads = [threading.Thread(target=call, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held) == 4  # 600 used, and room for four calls of 100
    quotas.release("acme", held[0], 100, now=time.time())
    quotas.hold("acme", "another", 100, now=time.time(), lease=60)  # its room came back
    with pytest.raises(QuotaExceeded):
        quotas.hold("acme", "one more", 100, now=time.time(), lease=60)
    # A hold whose worker died lapses after its lease.
    quotas.hold("acme", "dead", 0, now=time.time(), lease=60)
    later = time.time() + 61
    quotas.hold("acme", "after the lapse", 400, now=later, lease=60)
