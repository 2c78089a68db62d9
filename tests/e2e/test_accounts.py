"""Several upstream accounts through the real stack: the simulator stands in for three MiMo
accounts with keys and limits of their own, and the service routes jobs over them (API.md,
"Upstream accounts").

`a` and `b` are shared; `own` is bob's alone. The tests change the simulator's accounts at
run time (a revoked key, an empty balance, MiMo's 402 for a burst) and put them back.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests

from tests.e2e.test_metrics import scrape, value
from tests.support import CORPUS, Stack, data_url, running_stack
from tests.support.databases import Databases
from visionq.client import Client
from visionq.models import UsageReport
from visionq.state import keys

PNG = data_url(CORPUS / "good" / "hopper.png")
MODEL = "mimo-v2.5"
ADMIN_KEY = "key-ops"
RPM = 60  # one call a second per account, in the service's budget and the simulator's
ACCOUNTS = (
    {"name": "a", "api_key": "sim-key-a", "rpm": RPM},
    {"name": "b", "api_key": "sim-key-b", "rpm": RPM},
    {"name": "own", "api_key": "sim-key-own", "tenants": ["bob"]},
)


@pytest.fixture(scope="module")
def stack(redis_databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        redis_databases.take(),
        tmp_path_factory,
        simulator_args=("--rpm", "0"),
        accounts=ACCOUNTS,
        VISIONQ_ACCOUNT_PROBE_INTERVAL="1",
        VISIONQ_ADMIN_KEYS=f"ops:{ADMIN_KEY}",
        VISIONQ_PRICES="mimo-v2.5=0.4/0.01/2",
    ) as stack:
        _configure(stack, "a", rpm=RPM)
        _configure(stack, "b", rpm=RPM)
        yield stack


@pytest.fixture(autouse=True)
def healthy(stack: Stack) -> Iterator[None]:
    """Each test starts and ends with every account healthy and back in rotation."""
    yield
    for account in ACCOUNTS:
        _configure(stack, account["name"], revoked=False, balance=None, burst_402_over=0)
    client = redis.Redis.from_url(stack.redis_url)
    client.delete(*(keys.account(a["name"]) for a in ACCOUNTS))
    # The halved calls in flight after a 402 (a minute) too.
    client.delete(*(keys.pace_account(MODEL, a["name"], keys.PACE_CAP) for a in ACCOUNTS))
    client.close()


def _configure(stack: Stack, account: str, **config: Any) -> None:
    answer = requests.post(
        f"{stack.simulator_url}/_sim/config", json={"account": account, **config}, timeout=5
    )
    assert answer.status_code == 200, answer.text


def _stats(stack: Stack) -> dict[str, Any]:
    stats: dict[str, Any] = requests.get(f"{stack.simulator_url}/_sim/stats", timeout=5).json()
    return stats


def _served(stack: Stack) -> dict[str, int]:
    return {name: s["by_status"].get("200", 0) for name, s in _stats(stack)["accounts"].items()}


def _run(stack: Stack, tenant: str, count: int, prompt: str = "job") -> list[dict[str, Any]]:
    """`count` jobs of `tenant` submitted at once, each waited for."""

    def one(n: int) -> dict[str, Any]:
        answer = stack.submit({"prompt": f"{prompt} {n}", "images": [PNG]}, tenant=tenant)
        assert answer.status_code == 202, answer.text
        return stack.wait(answer.json()["id"], tenant, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_two_shared_accounts_carry_two_budgets_and_nothing_hits_a_429(stack: Stack) -> None:
    before = _stats(stack)["accounts"]
    jobs = _run(stack, "alice", 12)
    after = _stats(stack)["accounts"]
    assert [j["status"] for j in jobs] == ["succeeded"] * 12
    by_job = {name: sum(j["account"] == name for j in jobs) for name in ("a", "b", "own")}
    # Each account's one-a-second budget is full, so the other takes the next job.
    assert by_job["a"] >= 4 and by_job["b"] >= 4 and by_job["own"] == 0, by_job
    for name in ("a", "b"):
        assert after[name]["rate_limited"] == before[name]["rate_limited"]  # no 429
        assert (
            after[name]["by_status"].get("200", 0) - before[name]["by_status"].get("200", 0)
            == by_job[name]
        )
        assert after[name]["peak_rpm"] <= RPM


def test_a_pinned_tenant_stays_on_its_own_key(stack: Stack) -> None:
    before = _served(stack)
    bob = _run(stack, "bob", 4)
    alice = _run(stack, "alice", 2)
    after = _served(stack)
    assert {j["account"] for j in bob} == {"own"}
    assert {j["account"] for j in alice} <= {"a", "b"}
    assert after["own"] - before["own"] == 4


def test_a_revoked_key_is_benched_and_its_jobs_finish_on_the_other_account(stack: Stack) -> None:
    _configure(stack, "a", revoked=True)
    before = scrape(f"{stack.base_url}/metrics")
    jobs = _run(stack, "alice", 6, prompt="revoked")
    assert [j["status"] for j in jobs] == ["succeeded"] * 6
    assert {j["account"] for j in jobs} == {"b"}
    # The 401s were the account's fault, not the jobs': no attempt counts them.
    assert {j["attempts"] for j in jobs} == {1}
    after = scrape(f"{stack.base_url}/metrics")
    benched = value(after, "visionq_account_benched_total", account="a", reason="auth")
    assert benched > value(before, "visionq_account_benched_total", account="a", reason="auth")
    # Back once its key works again: a probe finds it healthy.
    _configure(stack, "a", revoked=False)
    _configure(stack, "b", revoked=True)
    again = _run(stack, "alice", 3, prompt="probed")
    assert [j["status"] for j in again] == ["succeeded"] * 3
    assert {j["account"] for j in again} == {"a"}


def test_a_pinned_tenant_whose_key_is_revoked_fails_and_never_borrows_a_shared_one(
    stack: Stack,
) -> None:
    _configure(stack, "own", revoked=True)
    before = _served(stack)
    jobs = _run(stack, "bob", 3, prompt="pinned revoked")
    assert [(j["status"], j["error"]["type"]) for j in jobs] == [("failed", "upstream_auth")] * 3
    assert {j["error"]["upstream_status"] for j in jobs} == {401}  # what its key answered
    assert _served(stack) == before  # no other account answered for bob
    assert "sim-key" not in str(jobs)


def test_a_burst_of_402s_is_not_taken_for_an_empty_account(stack: Stack) -> None:
    # MiMo's issue #99: concurrent calls over some number get 402 "insufficient funds".
    _configure(stack, "own", burst_402_over=2)
    jobs = _run(stack, "bob", 8, prompt="[sim:latency=0.5] burst")
    assert [j["status"] for j in jobs] == ["succeeded"] * 8
    assert {j["account"] for j in jobs} == {"own"}
    assert _stats(stack)["accounts"]["own"]["by_status"].get("402", 0) >= 1  # it did happen
    metrics = scrape(f"{stack.base_url}/metrics")
    assert value(metrics, "visionq_account_benched_total", account="own", reason="funds_suspected")


def test_an_account_out_of_funds_fails_its_jobs_once_a_probe_confirms_it(stack: Stack) -> None:
    _configure(stack, "own", balance=0)
    before = _stats(stack)["accounts"]["own"]["by_status"].get("402", 0)
    jobs = _run(stack, "bob", 3, prompt="no funds")
    assert [(j["status"], j["error"]["type"]) for j in jobs] == [
        ("failed", "insufficient_balance")
    ] * 3
    assert {j["error"]["upstream_status"] for j in jobs} == {402}
    # The first 402s (one for each job already in flight) were taken for a burst; one
    # probe got a second one, and then the jobs failed without more calls.
    assert 2 <= _stats(stack)["accounts"]["own"]["by_status"]["402"] - before <= 4
    metrics = scrape(f"{stack.base_url}/metrics")
    assert value(metrics, "visionq_account_benched_total", account="own", reason="funds") >= 1
    assert value(metrics, "visionq_account_in_rotation", account="own") == 0
    assert value(metrics, "visionq_account_in_rotation", account="a") == 1


def _usage(stack: Stack, key: str, **params: str) -> requests.Response:
    return requests.get(
        f"{stack.base_url}/v1/usage",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_usage_per_account_equals_the_simulators_own_count(stack: Stack) -> None:
    _run(stack, "alice", 3, prompt="counted")
    _run(stack, "bob", 2, prompt="counted")
    answer = _usage(stack, ADMIN_KEY, group_by="tenant,account")
    assert answer.status_code == 200, answer.text
    UsageReport.model_validate(answer.json())  # the documented shape, field for field
    counted = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
    ours: dict[str, dict[str, int]] = {}
    for bucket in answer.json()["data"]:
        mine = ours.setdefault(bucket["account"], dict.fromkeys(counted, 0))
        for name in counted:
            mine[name] += bucket[name]
    theirs = _stats(stack)["accounts"]
    for name in ("a", "b", "own"):
        expected = {k: theirs[name]["usage"][k] for k in counted}
        assert ours.get(name, dict.fromkeys(counted, 0)) == expected, name
    # The same image sent again with the same key: MiMo's prompt cache answered part.
    assert sum(mine["cached_tokens"] for mine in ours.values()) > 0
    total = answer.json()["total"]
    assert total["requests"] == sum(s["by_status"].get("200", 0) for s in theirs.values())
    expected_cost = (
        (total["prompt_tokens"] - total["cached_tokens"]) * 0.4
        + total["cached_tokens"] * 0.01
        + total["completion_tokens"] * 2
    ) / 1e6
    assert total["cost"] == pytest.approx(expected_cost, abs=1e-8)


def test_a_tenant_sees_only_its_own_usage_and_an_admin_key_any(stack: Stack) -> None:
    _run(stack, "alice", 1, prompt="alice's")
    mine = _usage(stack, "key-alice", group_by="model")
    assert mine.status_code == 200, mine.text
    assert [b["model"] for b in mine.json()["data"]] == [MODEL]
    assert mine.json()["total"]["jobs"]["succeeded"] >= 1
    refused = _usage(stack, "key-alice", tenant="bob")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tenant"
    assert _usage(stack, "key-alice", group_by="tenant").status_code == 400
    theirs = _usage(stack, ADMIN_KEY, tenant="alice", group_by="model")
    assert theirs.json()["total"] == mine.json()["total"]
    bad = _usage(stack, "key-alice", group_by="week")
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "group_by")
    days = _usage(stack, "key-alice", start="2026-01-01T00:00:00", end="2026-01-03")
    assert [b["start_time"] for b in days.json()["data"]] == [1767225600, 1767312000]


def test_the_usage_command_prints_the_buckets_and_the_sdk_reads_them(stack: Stack) -> None:
    _run(stack, "alice", 1, prompt="printed")
    env = dict(stack.env, VISIONQ_URL=stack.base_url, VISIONQ_KEY="key-alice")
    done = subprocess.run(
        [sys.executable, "-m", "visionq", "usage", "--by", "model,account"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "ACCOUNT", "REQUESTS"] and "COST" in lines[0]
    with Client(stack.base_url, "key-alice") as client:
        answer = client.usage(group_by=["model", "account"])
    assert len(lines) == len(answer["data"]) + 2  # the heading and the total
    total = lines[-1].split()
    assert total[0] == "total" and total[1] == f"{answer['total']['requests']:,}"
    assert {b["account"] for b in answer["data"]} <= {"a", "b"}


def test_counting_tokens_gives_the_inputs_cost_before_submitting(stack: Stack) -> None:
    with stack.session() as http:
        answer = http.post(
            f"{stack.base_url}/v1/tokens",
            json={"prompt": "what is it?", "images": [PNG]},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    counted = answer.json()
    assert counted["input_tokens"] > counted["image_tokens"] > 0  # the text counts too
    assert counted["input_cost"] == pytest.approx(counted["input_tokens"] * 0.4 / 1e6)
