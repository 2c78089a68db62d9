"""Median and p99 end-to-end time of N jobs of one ~100 KB image against a running stack.

Usage: python bench/e2e_latency.py [--n 100] [--url http://127.0.0.1:8000]
Each job is submitted as a multipart upload, then read with `?wait=`; the time is from
just before the POST to the answer that shows it `succeeded`. Jobs run one at a time, so
the figure is latency, not throughput. (The full benchmark suite comes with the
performance issue; this script is the foundation's one measurement.)
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import requests
from PIL import Image


def hundred_kb_png() -> bytes:
    side = 184  # noise barely compresses: 184*184*3 bytes is about 100 KB
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--url", default=os.environ.get("VISIONQ_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args()
    http = requests.Session()
    if key := os.environ.get("VISIONQ_KEY"):
        http.headers["Authorization"] = f"Bearer {key}"
    image = hundred_kb_png()
    times = []
    for _ in range(args.n + 5):
        started = time.perf_counter()
        job = http.post(
            f"{args.url}/v1/jobs", files=[("image", ("x.png", image))], data={"prompt": "describe"}
        ).json()
        while job["status"] not in ("succeeded", "failed", "canceled"):
            job = http.get(f"{args.url}/v1/jobs/{job['id']}", params={"wait": 30}).json()
        assert job["status"] == "succeeded", job
        times.append(time.perf_counter() - started)
    times = sorted(times[5:])  # the first few warm up connections and processes
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"{len(times)} jobs of a {len(image) // 1024} KB PNG: "
        f"median {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"min {times[0] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
