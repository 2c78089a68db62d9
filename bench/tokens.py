"""B6 token counting: the count alone, and `POST /v1/tokens` under the production server.

The count is `visionq.media.images.probe` (format and size from the header, no pixel decoded)
plus `visionq.tokens.image_tokens`, on 12-megapixel photo-like JPEG (with an Exif block,
as a camera writes it) and PNG files held in memory, in this one process and thread. For
scale, the same count by a full decode (what it would cost without the header read) is
timed on a few images.

`/v1/tokens` is driven by wrk (one thread) with a JSON body carrying a small PNG as a data
URL; its baseline is `GET /healthz` on the same API, driven the same way. wrk, the API's
gunicorn workers and Redis share the machine's 2 cores, which bounds both rates.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench import wrk
from bench.images import photo
from bench.report import Check
from bench.stack import running
from visionq import tokens
from visionq.media import images

TARGET_PER_SECOND = 20_000
CONNECTIONS = 10


def _files() -> dict[str, bytes]:
    picture = photo(4000, 3000, seed=12)
    exif = Image.Exif()
    exif.update({0x010F: "bench", 0x0110: "visionq", 0x0112: 1, 0x0132: "2024:01:01 00:00:00"})
    jpeg, png = io.BytesIO(), io.BytesIO()
    picture.save(jpeg, "JPEG", quality=90, exif=exif)
    picture.save(png, "PNG", compress_level=1)
    return {"jpeg_12mp": jpeg.getvalue(), "png_12mp": png.getvalue()}


def _count(data: bytes) -> int:
    info = images.probe(io.BytesIO(data))
    return tokens.image_tokens(info.width, info.height)


def _counted_by_decode(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return tokens.image_tokens(image.width, image.height)


def _rate(count: Any, data: bytes, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        count(data)
    return n / (time.perf_counter() - started)


def _small_png_data_url() -> str:
    out = io.BytesIO()
    photo(64, 64, seed=6).save(out, "PNG")
    return images.data_url_prefix("png") + base64.b64encode(out.getvalue()).decode()


def run(quick: bool, out: Path) -> dict[str, Any]:
    batches, per_batch, decodes, seconds = (3, 5_000, 1, 2) if quick else (5, 40_000, 3, 10)
    figures: dict[str, Any] = {"count": {}, "generator": "wrk -t1", "connections": CONNECTIONS}
    for name, data in _files().items():
        expected = tokens.image_tokens(4000, 3000)
        assert _count(data) == _counted_by_decode(data) == expected
        rates = [_rate(_count, data, per_batch) for _ in range(batches)]
        figures["count"][name] = {
            "file_bytes": len(data),
            "images_per_batch": per_batch,
            "per_second": [round(r) for r in rates],
            "per_second_median": round(statistics.median(rates)),
            "by_full_decode_per_second": round(_rate(_counted_by_decode, data, decodes), 2),
        }
    folder = Path(tempfile.mkdtemp(prefix="visionq-b6-"))
    try:
        body = json.dumps({"prompt": "count", "images": [_small_png_data_url()]}).encode()
        script = wrk.script(folder, "tokens", body, "application/json")
        get = folder / "get.lua"
        get.write_text('wrk.method = "GET"\n')
        with running(workers={}, env={"VISIONQ_RATE_LIMIT": "none"}) as stack:
            healthz, count = f"{stack.api_url}/healthz", f"{stack.api_url}/v1/tokens"
            wrk.run(healthz, get, connections=CONNECTIONS, seconds=1)  # warm-up, not counted
            figures["healthz"] = wrk.run(healthz, get, connections=CONNECTIONS, seconds=seconds)
            figures["tokens"] = wrk.run(count, script, connections=CONNECTIONS, seconds=seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures["body_bytes"] = len(body)
    return figures


def checks(r: dict[str, Any]) -> list[Check]:
    result = [
        Check(
            f"B6 {name} token counts/s, one core",
            f["per_second_median"],
            f["by_full_decode_per_second"],
            "count by full decode",
            f">= {TARGET_PER_SECOND}/s",
            f["per_second_median"] >= TARGET_PER_SECOND,
        )
        for name, f in r["count"].items()
    ]
    tokens_rate, healthz_rate = r["tokens"]["per_second"], r["healthz"]["per_second"]
    result.append(
        Check(
            "B6 /v1/tokens req/s (wrk, 10 conn)",
            tokens_rate,
            healthz_rate,
            "/healthz, same API",
            "reported (no target)",
            r["tokens"]["non_2xx"] == 0 and tokens_rate > 0,
        )
    )
    return result
