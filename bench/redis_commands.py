"""Redis commands per job, from INFO commandstats: `python -m bench.redis_commands [N]`.

Boots a whole bench stack (own redis-server, simulator, one worker per queue, sweeper,
API), warms up, resets the counters, runs N jobs of one small PNG (wait=), then reads
INFO commandstats. A second window of the same length with no jobs gives the idle
background (worker polls, sweeper rounds), which is subtracted.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import redis
import requests
from PIL import Image

from bench.stack import running


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _stats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def main(n: int = 200) -> None:
    body = {
        "model": "mimo-v2.5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _png()}},
                    {"type": "text", "text": "what colour?"},
                ],
            }
        ],
    }
    with running(workers={"prepare": 1, "upstream": 1, "webhooks": 1}) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        session = requests.Session()
        headers = {"Authorization": "Bearer key-big", "Prefer": "wait=60"}

        def one(_: int) -> str:
            r = session.post(f"{stack.api_url}/v1/jobs", json=body, headers=headers, timeout=90)
            r.raise_for_status()
            return r.json()["status"]

        for i in range(5):
            one(i)
        time.sleep(2)
        client.config_resetstat()
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(n)))
        busy = time.monotonic() - t0
        time.sleep(1)
        window = time.monotonic() - t0
        with_jobs = _stats(client)
        client.config_resetstat()
        time.sleep(window)
        idle = _stats(client)
    assert all(s == "succeeded" for s in statuses), statuses
    names = sorted(set(with_jobs) | set(idle))
    per_job = {k: (with_jobs.get(k, 0) - idle.get(k, 0)) / n for k in names}
    total = sum(with_jobs.values()) - sum(idle.values())
    print(
        json.dumps(
            {
                "jobs": n,
                "busy_s": round(busy, 1),
                "window_s": round(window, 1),
                "commands_with_jobs": sum(with_jobs.values()),
                "commands_idle_same_window": sum(idle.values()),
                "commands_per_job": round(total / n, 1),
                "per_job_by_command": {
                    k: round(v, 2) for k, v in per_job.items() if abs(v) >= 0.05
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
