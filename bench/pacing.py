"""B7 pacing: two upstream worker processes share a 120 RPM budget against a simulator
that enforces 120 RPM itself (any call over the budget would be a 429 there).

A big tenant submits 290 jobs at once; 20 s later, with most of that backlog still
waiting, a small tenant submits 10. Figures: the upstream rate achieved while the backlog
lasted against the budget, the 429s the simulator answered, and how long the small
tenant's jobs took from submit to `succeeded`.
"""

from __future__ import annotations

import base64
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from bench.report import Check
from bench.stack import running

BUDGET_RPM = 120
WINDOW_SECONDS = 60  # the budget's window: "within two windows" is 120 s


def _png_data_url(seed: int) -> str:
    image = Image.new("RGB", (256, 256), (seed % 256, (seed // 256) % 256, 128))
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _submit(api: str, key: str, prompt: str, image: str) -> tuple[str, float]:
    submitted = time.time()
    response = requests.post(
        f"{api}/v1/jobs",
        json={"prompt": prompt, "images": [image]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["id"], submitted


def _wait(api: str, key: str, job_id: str) -> dict[str, Any]:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {key}"
        while True:
            job = http.get(f"{api}/v1/jobs/{job_id}", params={"wait": 60}, timeout=90).json()
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job


def run(quick: bool, out: Path) -> dict[str, Any]:
    big_n, small_n, small_after = (30, 3, 5.0) if quick else (290, 10, 20.0)
    with (
        running(
            workers={"prepare": 1, "upstream": 2},
            simulator_args=("--rpm", str(BUDGET_RPM), "--latency", "0.5"),
            env={"VISIONQ_UPSTREAM_RPM": str(BUDGET_RPM)},
        ) as stack,
        ThreadPoolExecutor(16) as pool,
    ):
        api = stack.api_url
        started = time.time()
        big = list(
            pool.map(lambda n: _submit(api, "key-big", f"big {n}", _png_data_url(n)), range(big_n))
        )
        time.sleep(max(0.0, started + small_after - time.time()))
        small = list(
            pool.map(
                lambda n: _submit(api, "key-small", f"small {n}", _png_data_url(10_000 + n)),
                range(small_n),
            )
        )
        big_jobs = list(pool.map(lambda j: _wait(api, "key-big", j[0]), big))
        small_jobs = list(pool.map(lambda j: _wait(api, "key-small", j[0]), small))
        stats = stack.simulator_stats()
    jobs = big_jobs + small_jobs
    calls = stats["by_status"].get("200", 0)
    # Whole minutes from the first call on; the last, partial one is the backlog running out.
    full_minutes = stats["per_minute"][:-1]
    if full_minutes:
        achieved = statistics.mean(full_minutes)
    else:  # a quick run ends within its first minute
        achieved = (calls - 1) / (stats["last_admitted"] - stats["first_admitted"]) * 60
    small_waits = [j["completed_at"] - s for j, (_, s) in zip(small_jobs, small, strict=True)]
    return {
        "jobs": len(jobs),
        "succeeded": sum(j["status"] == "succeeded" for j in jobs),
        "upstream_calls": calls,
        "upstream_429": stats["rate_limited"] + stats["by_status"].get("429", 0),
        "achieved_rpm": round(achieved, 1),
        "peak_rpm": stats["peak_rpm"],
        "calls_per_minute": stats["per_minute"],
        "budget_rpm": BUDGET_RPM,
        "budget_used": round(achieved / BUDGET_RPM, 4),
        "small_wait_median_s": round(statistics.median(small_waits), 2),
        "small_wait_max_s": round(max(small_waits), 2),
        "small_backlog_ahead": sum(j["completed_at"] > max(s for _, s in small) for j in big_jobs),
        "two_windows_s": 2 * WINDOW_SECONDS,
    }


def checks(r: dict[str, Any]) -> list[Check]:
    return [
        Check(
            "B7 upstream RPM achieved",
            r["achieved_rpm"],
            r["budget_rpm"],
            "the budget",
            "ratio 0.98-1.00",
            0.98 <= r["budget_used"] <= 1.0,
        ),
        Check("B7 upstream 429s", r["upstream_429"], None, "", "0", r["upstream_429"] == 0),
        Check(
            "B7 small tenant's slowest job, s",
            r["small_wait_max_s"],
            r["two_windows_s"],
            "two budget windows",
            "ratio <= 1",
            r["small_wait_max_s"] <= r["two_windows_s"],
        ),
    ]
