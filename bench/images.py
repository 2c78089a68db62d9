"""B5 large images: a 50 MB PNG, a 40 MB JPEG and a 24-megapixel JPEG through the real
prepare step (`visionq.pipeline.prepare`, a real redis-server, file storage), against a
plain script that reads, fully decodes and base64-encodes the same file.

Every measurement runs in a fresh subprocess, so its peak RSS is its own: the peak is
reset (`/proc/self/clear_refs`) once the process is set up, and "above idle" is the
peak minus the RSS at that moment. The job is submitted by this process beforehand, so
the child does only the prepare step. The target is judged on `resize: never`, which is
the same work as the baseline (validate, base64 into the upstream body); `auto` is
reported beside it (all three images are over MiMo's `IMAGE_MAX_PIXELS`, so `auto`
resizes them). The base64 limit is raised to 128 MiB here, or `never` would refuse the
two big files for being over MiMo's 50 MB after base64 instead of doing the work.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from bench.report import Check
from visionq.dev.redisserver import RedisServer
from visionq.intake import Intake
from visionq.models import JobRequest
from visionq.runtime import Runtime
from visionq.settings import Settings

MAX_BASE64 = 128 * 1024**2
TIME_RATIO = 1.5

_STATUS = """
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
"""

_BASELINE = (
    _STATUS
    + """
import base64, io, json, sys, time
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
reset = reset_peak()
idle = status("VmRSS")
started = time.perf_counter()
with open(sys.argv[1], "rb") as fp:
    data = fp.read()
image = Image.open(io.BytesIO(data))
image.load()
encoded = base64.b64encode(data)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "idle": idle, "peak": status("VmHWM"), "reset": reset,
                  "base64_bytes": len(encoded)}))
"""
)

_PREPARE = (
    _STATUS
    + """
import json, sys, time
from visionq import pipeline
from visionq.runtime import Runtime
from visionq.settings import Settings
settings = Settings(**json.loads(sys.argv[1]))
job_id = sys.argv[2]
rt = Runtime.from_settings(settings)
rt.jobs.load(job_id)  # the connection is open before the clock starts
reset = reset_peak()
idle = status("VmRSS")
started = time.perf_counter()
model = pipeline.prepare(job_id, rt)
seconds = time.perf_counter() - started
peak = status("VmHWM")
_, body_bytes = rt.store.open_body(job_id)
image = rt.jobs.load(job_id).images[0]
print(json.dumps({"seconds": seconds, "idle": idle, "peak": peak, "reset": reset,
                  "prepared": model is not None, "body_bytes": body_bytes,
                  "sent": [image["format"], image["width"], image["height"], image["bytes"]]}))
"""
)


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.frombytes(
        "RGB", (width, height), random.Random(seed).randbytes(width * height * 3)
    )


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour fields with grain: compresses like a camera JPEG, not like noise."""
    rng = random.Random(seed)
    fields = Image.frombytes("RGB", (40, 30), rng.randbytes(40 * 30 * 3))
    fields = fields.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    return Image.blend(fields, Image.merge("RGB", (grain, grain, grain)), 0.15)


def _make_files(folder: Path, quick: bool) -> dict[str, Path]:
    """Deterministic files: noise where the size must come from the pixels."""
    files = {"jpeg_24mp": folder / "24mp.jpg"}
    photo(6000, 4000, seed=24).save(files["jpeg_24mp"], quality=90)
    if not quick:
        files["png_50mb"] = folder / "50mb.png"
        _noise(5000, 3333, seed=50).save(files["png_50mb"], compress_level=1)
        files["jpeg_40mb"] = folder / "40mb.jpg"
        _noise(5000, 3300, seed=40).save(files["jpeg_40mb"], quality=95, subsampling=0)
    return files


def _child(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "seconds": [round(s["seconds"], 4) for s in samples],
        "seconds_median": round(statistics.median(s["seconds"] for s in samples), 4),
        "rss_above_idle_max": max(s["peak"] - s["idle"] for s in samples),
        "idle_rss": samples[0]["idle"],
        "peak_reset": all(s["reset"] for s in samples),
        **{k: samples[0][k] for k in ("prepared", "body_bytes", "sent") if k in samples[0]},
    }


def run(quick: bool, out: Path) -> dict[str, Any]:
    repeats = 1 if quick else 2
    root = Path(tempfile.mkdtemp(prefix="visionq-b5-"))
    files = _make_files(root, quick)
    redis_server = RedisServer(root / "redis").start()
    try:
        settings = {
            "redis_url": redis_server.url,
            "storage_url": f"file://{root / 'store'}",
            "upstream_base_url": "http://127.0.0.1:9/v1",  # never called: only prepare runs
            "mimo_api_key": "unused",
            "max_image_bytes": MAX_BASE64,
        }
        rt = Runtime.from_settings(Settings(**settings))
        intake = Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
        figures: dict[str, Any] = {"files": {}, "max_image_bytes": MAX_BASE64}
        for name, path in files.items():
            with Image.open(path) as image:
                size, decoded = image.size, image.width * image.height * len(image.getbands())
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "never": [], "auto": []}
            for n in range(repeats):
                runs["baseline"].append(_child(_BASELINE, str(path)))
                for mode in ("never", "auto") if n == 0 else ("never",):
                    with path.open("rb") as upload:
                        job = intake.submit(
                            JobRequest(prompt="b5", images=[], resize=mode),
                            tenant="bench",
                            uploads=[upload],
                        )
                    runs[mode].append(_child(_PREPARE, json.dumps(settings), job.id))
            figures["files"][name] = {
                "file_bytes": path.stat().st_size,
                "size": list(size),
                "decoded_bytes": decoded,
                "rss_budget": decoded + 2 * path.stat().st_size,
                **{mode: _summary(samples) for mode, samples in runs.items()},
            }
    finally:
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def checks(r: dict[str, Any]) -> list[Check]:
    result = []
    for name, f in r["files"].items():
        never, auto, base = f["never"], f["auto"], f["baseline"]
        result.append(
            Check(
                f"B5 {name} prepare s (never; auto {auto['seconds_median']:.3g} s)",
                never["seconds_median"],
                base["seconds_median"],
                "read+decode+base64 script",
                f"ratio <= {TIME_RATIO}",
                never["prepared"]
                and never["seconds_median"] <= TIME_RATIO * base["seconds_median"],
            )
        )
        result.append(
            Check(
                f"B5 {name} peak RSS above idle, MB (never)",
                round(never["rss_above_idle_max"] / 1e6, 1),
                round(f["rss_budget"] / 1e6, 1),
                "decoded pixels + 2x file",
                "ratio <= 1",
                never["rss_above_idle_max"] <= f["rss_budget"],
            )
        )
    return result
