"""Auto-fit: a 48-megapixel photo-like JPEG through the whole stack (API under gunicorn,
a prepare and an upstream worker, the simulator at latency 0), with `resize: auto` and
with `resize: never`.

Figures: the image bytes sent upstream (the base64 data URL of the image as prepared, from
the job's `images[0].bytes`) and submit-to-`succeeded` time, alternating the two modes.
The simulator's answer names the size it received, which is checked against the job.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.images import photo
from bench.report import Check
from bench.stack import running
from visionq import tokens
from visionq.media import images

KEY = "key-big"


def _run_job(api: str, path: Path, resize: str) -> dict[str, Any]:
    with requests.Session() as http, path.open("rb") as upload:
        http.headers["Authorization"] = f"Bearer {KEY}"
        started = time.perf_counter()
        response = http.post(
            f"{api}/v1/jobs",
            data={"prompt": "describe", "resize": resize},
            files={"image": ("photo.jpg", upload, "image/jpeg")},
            timeout=120,
        )
        response.raise_for_status()
        job = response.json()
        while job["status"] not in ("succeeded", "failed", "canceled"):
            job = http.get(f"{api}/v1/jobs/{job['id']}", params={"wait": 30}, timeout=60).json()
        elapsed = time.perf_counter() - started
    image = job["images"][0]
    sent = images.base64_length(image["bytes"]) + len(images.data_url_prefix(image["format"]))
    seen = f"{image['width']}x{image['height']}"
    return {
        "status": job["status"],
        "seconds": elapsed,
        "sent_bytes": sent,
        "size": seen,
        "image_tokens": image["image_tokens"],
        "simulator_saw_it": job["status"] == "succeeded" and seen in job["result"]["content"],
    }


def run(quick: bool, out: Path) -> dict[str, Any]:
    repeats = 1 if quick else 4
    folder = Path(tempfile.mkdtemp(prefix="visionq-autofit-"))
    try:
        path = folder / "48mp.jpg"
        photo(8000, 6000, seed=48).save(path, quality=90)
        file_bytes = path.stat().st_size
        runs: dict[str, list[dict[str, Any]]] = {"auto": [], "never": []}
        with running(
            workers={"prepare": 1, "upstream": 1},
            simulator_args=("--latency", "0", "--rpm", "0"),
            env={"VISIONQ_UPSTREAM_RPM": "6000"},
        ) as stack:
            _run_job(stack.api_url, path, "never")  # warm-up: imports, connections
            for _ in range(repeats):
                for mode in runs:
                    runs[mode].append(_run_job(stack.api_url, path, mode))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures: dict[str, Any] = {
        "file_bytes": file_bytes,
        "size": "8000x6000",
        "image_tokens_original": tokens.image_tokens(8000, 6000),
    }
    for mode, samples in runs.items():
        figures[mode] = {
            "samples": len(samples),
            "succeeded": sum(s["status"] == "succeeded" for s in samples),
            "simulator_saw_the_size": all(s["simulator_saw_it"] for s in samples),
            "seconds": [round(s["seconds"], 3) for s in samples],
            "seconds_median": round(statistics.median(s["seconds"] for s in samples), 3),
            "sent_bytes": samples[0]["sent_bytes"],
            "size": samples[0]["size"],
            "image_tokens": samples[0]["image_tokens"],
        }
    return figures


def checks(r: dict[str, Any]) -> list[Check]:
    auto, never = r["auto"], r["never"]
    ok = all(m["succeeded"] == m["samples"] and m["simulator_saw_the_size"] for m in (auto, never))
    same_tokens = auto["image_tokens"] == never["image_tokens"] == r["image_tokens_original"]
    return [
        Check(
            "auto-fit 48 MP JPEG bytes sent upstream",
            auto["sent_bytes"],
            never["sent_bytes"],
            "resize=never",
            "ratio < 0.5, same tokens",
            ok and same_tokens and auto["sent_bytes"] < 0.5 * never["sent_bytes"],
        ),
        Check(
            "auto-fit 48 MP JPEG submit-to-succeeded s",
            auto["seconds_median"],
            never["seconds_median"],
            "resize=never",
            "reported (ratio <= 1.5)",
            ok and auto["seconds_median"] <= 1.5 * never["seconds_median"],
        ),
    ]
