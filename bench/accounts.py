"""B9 accounts: 1, 2 and 3 upstream accounts of 120 RPM each, against a simulator that
enforces 120 RPM per account (any call over an account's budget is a 429 there), with two
upstream worker processes and a backlog that outlasts the run.

Figures: the upstream rate achieved against the sum of the budgets (whole minutes from
the first call; N accounts must carry N budgets), the 429s; and the CPU of usage
accounting. That one is measured apart, on runs the budget does not bind (a paced run is
mostly idle CPU, which drowns a small difference): the stack's CPU per job (API, workers,
sweeper and Redis, not the simulator) over a burst of jobs, less the same processes' CPU
over an idle window of the same length, with the usage counters on and with
`VISIONQ_USAGE_RECORDS=false`, alternated so that drift falls on both. Those runs differ
by about 10 % among themselves, more than accounting costs, so the figure judged is the
direct one: the CPU (this process and Redis) of the one step accounting adds to, a job's
finish, with and without it, thousands of times in alternated rounds, as a share of the
stack's whole CPU per job from those runs.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.pacing import _png_data_url, _submit, _wait
from bench.redis_commands import _tree_cpu
from bench.report import Check
from bench.stack import BenchStack, running
from visionq.dev.redisserver import RedisServer
from visionq.settings import Price
from visionq.state.jobs import JobStore

RPM = 120


def _cpu(stack: BenchStack) -> float:
    """CPU seconds so far of the stack but the simulator, Redis included."""
    ours = sum(
        _tree_cpu(child.pid) for child in stack.children if str(child.args[3]) != "simulator"
    )
    info = redis.Redis.from_url(stack.redis_url).info("cpu")
    return ours + float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


#: A finish's usage as MiMo reports it, cache and reasoning included.
_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 80,
    "completion_tokens_details": {"reasoning_tokens": 20},
    "prompt_tokens_details": {"cached_tokens": 1000, "image_tokens": 1100},
}


def _finish_cpu(finishes: int, rounds: int) -> dict[str, float]:
    """CPU ms per finish of this process and of Redis, with usage accounting and without
    (`JobStore.succeed`, the one step that accounting adds to), alternated in rounds on
    one redis-server; the medians."""
    server = RedisServer(Path(tempfile.mkdtemp(prefix="visionq-bench-usage-"))).start()
    client = redis.Redis.from_url(server.url)
    price = Price(input=0.4, cached_input=0.08, output=2)
    result = {"content": "ok", "usage": _USAGE, "response": {}}
    spent: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(rounds):
            for usage in (True, False):
                jobs = JobStore(
                    client, ttl=600, queued_grace=300, usage_retention=86400 if usage else None
                )
                ids = [
                    jobs.create(
                        tenant="t",
                        model="mimo-v2.5",
                        api="openai",
                        request={"messages": []},
                        images=[],
                        webhook_url=None,
                        metadata=None,
                    ).id
                    for _ in range(finishes)
                ]
                redis_before, ours_before = _redis_cpu(client), time.process_time()
                for job_id in ids:
                    jobs.succeed(job_id, result, account="main", price=price, image_tokens=1100)  # type: ignore[arg-type]
                ours = time.process_time() - ours_before
                spent[usage].append(1000 * (ours + _redis_cpu(client) - redis_before) / finishes)
    finally:
        client.close()
        server.stop()
    return {"with": statistics.median(spent[True]), "without": statistics.median(spent[False])}


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _accounting_cpu(jobs: int, *, usage: bool) -> float:
    """CPU ms per job of the stack at full speed, the idle background subtracted."""
    env = {
        "VISIONQ_UPSTREAM_ACCOUNTS": json.dumps(
            [{"name": "account-0", "api_key": "bench-key-0", "rpm": 1_000_000, "concurrency": 64}]
        ),
        "VISIONQ_USAGE_RECORDS": "true" if usage else "false",
        "VISIONQ_PRICES": "mimo-v2.5=0.4/0.08/2",
        "VISIONQ_RATE_LIMIT": "none",
    }
    images = [_png_data_url(n) for n in range(50)]
    with (
        running(
            workers={"prepare": 1, "upstream": 1},
            simulator_args=("--rpm", "0"),
            env=env,
            accounts=(("account-0", "bench-key-0"),),
        ) as stack,
        ThreadPoolExecutor(8) as pool,
    ):
        api = stack.api_url

        def burst(n: int) -> None:
            ids = pool.map(lambda i: _submit(api, "key-big", f"job {i}", images[i % 50]), range(n))
            done = list(pool.map(lambda j: _wait(api, "key-big", j[0]), list(ids)))
            assert all(j["status"] == "succeeded" for j in done), done

        burst(20)
        time.sleep(2)
        before, started = _cpu(stack), time.monotonic()
        burst(jobs)
        time.sleep(1)
        busy, window = _cpu(stack) - before, time.monotonic() - started
        before = _cpu(stack)
        time.sleep(window)
        idle = _cpu(stack) - before
    return 1000 * (busy - idle) / jobs


def _run(n_accounts: int, seconds: int) -> dict[str, Any]:
    accounts = tuple((f"account-{n}", f"bench-key-{n}") for n in range(n_accounts))
    env = {
        "VISIONQ_UPSTREAM_ACCOUNTS": json.dumps(
            [{"name": name, "api_key": key, "rpm": RPM} for name, key in accounts]
        ),
        "VISIONQ_PRICES": "mimo-v2.5=0.4/0.08/2",
        "VISIONQ_RATE_LIMIT": "none",
    }
    jobs = int(n_accounts * RPM * seconds / 60 * 1.1) + 10
    images = [_png_data_url(n) for n in range(50)]
    with (
        running(
            workers={"prepare": 1, "upstream": 2},
            simulator_args=("--rpm", str(RPM), "--latency", "0.5"),
            env=env,
            accounts=accounts,
        ) as stack,
        ThreadPoolExecutor(16) as pool,
    ):
        api = stack.api_url
        submitted = list(
            pool.map(lambda n: _submit(api, "key-big", f"job {n}", images[n % 50]), range(jobs))
        )
        done = list(pool.map(lambda j: _wait(api, "key-big", j[0]), submitted))
        stats = stack.simulator_stats()
    per_account = {name: s["by_status"].get("200", 0) for name, s in stats["accounts"].items()}
    full_minutes = stats["per_minute"][:-1]
    if full_minutes:
        achieved = statistics.mean(full_minutes)
    else:  # a quick run ends within its first minute: the rate between first and last call
        calls = sum(per_account.values())
        achieved = (calls - n_accounts) / (stats["last_admitted"] - stats["first_admitted"]) * 60
    return {
        "accounts": n_accounts,
        "jobs": jobs,
        "succeeded": sum(j["status"] == "succeeded" for j in done),
        "calls_per_account": per_account,
        "upstream_429": stats["rate_limited"] + stats["by_status"].get("429", 0),
        "achieved_rpm": round(achieved, 1),
        "budget_rpm": n_accounts * RPM,
        "budget_used": round(achieved / (n_accounts * RPM), 4),
    }


def run(quick: bool, out: Path) -> dict[str, Any]:
    counts, seconds = ((2,), 20) if quick else ((1, 2, 3), 150)
    jobs, pairs = (150, 1) if quick else (600, 3)
    runs = [_run(n, seconds) for n in counts]
    started = time.monotonic()
    on: list[float] = []
    off: list[float] = []
    for _ in range(pairs):
        on.append(_accounting_cpu(jobs, usage=True))
        off.append(_accounting_cpu(jobs, usage=False))
    with_usage, without = statistics.median(on), statistics.median(off)
    finish = _finish_cpu(2000 if quick else 5000, 3 if quick else 7)
    added = finish["with"] - finish["without"]
    return {
        "runs": runs,
        "accounting_jobs_per_run": jobs,
        "cpu_ms_per_job_with_usage": [round(x, 3) for x in on],
        "cpu_ms_per_job_without_usage": [round(x, 3) for x in off],
        "without_usage_cpu_ms_per_job": round(without, 3),
        "end_to_end_overhead_pct": round(100 * (with_usage / without - 1), 1),
        "finish_cpu_ms_with_usage": round(finish["with"], 4),
        "finish_cpu_ms_without_usage": round(finish["without"], 4),
        "usage_cpu_ms_per_job": round(added, 4),
        "usage_cpu_overhead_pct": round(100 * added / without, 2),
        "compare_seconds": round(time.monotonic() - started, 1),
    }


def checks(r: dict[str, Any]) -> list[Check]:
    out = []
    for one in r["runs"]:
        n = one["accounts"]
        out.append(
            Check(
                f"B9 upstream RPM, {n} account{'s' if n > 1 else ''}",
                one["achieved_rpm"],
                one["budget_rpm"],
                "the budgets' sum",
                ">= 0.98",
                one["budget_used"] >= 0.98,
            )
        )
        out.append(
            Check(
                f"B9 upstream 429s, {n} account{'s' if n > 1 else ''}",
                one["upstream_429"],
                None,
                "",
                "0",
                one["upstream_429"] == 0,
            )
        )
    out.append(
        Check(
            f"B9 CPU of usage accounting per job, % ({r['usage_cpu_ms_per_job']} ms; "
            f"end to end {r['end_to_end_overhead_pct']} %)",
            r["usage_cpu_overhead_pct"],
            r["without_usage_cpu_ms_per_job"],
            "ms per job without it",
            "<= 5",
            r["usage_cpu_overhead_pct"] <= 5,
        )
    )
    return out
