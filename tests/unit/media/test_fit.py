"""`resize: auto`: what MiMo would shrink (or what is too big to send) is shrunk on the worker
to exactly the formula's size, so the token count never changes; the rest goes as it is."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import SIM_KEY
from visionq import pipeline, responses, tokens
from visionq.errors import InvalidImage
from visionq.intake import Intake
from visionq.media import fit, images
from visionq.models import JobRequest
from visionq.runtime import Runtime
from visionq.settings import MIMO_MAX_IMAGE_BYTES, Settings

MAX_PIXELS = 178_956_970


def _sizes(n: int, seed: int) -> Iterator[tuple[int, int]]:
    """Small, photo-sized, huge, extreme aspect ratios, and sizes around IMAGE_MAX_PIXELS."""
    rng = random.Random(seed)
    kinds = [
        lambda: (rng.randint(1, 300), rng.randint(1, 300)),
        lambda: (rng.randint(300, 4000), rng.randint(300, 4000)),
        lambda: (rng.randint(4000, 70_000), rng.randint(4000, 70_000)),
        lambda: (rng.randint(1, 64), rng.randint(10_000, 500_000)),
        lambda: (rng.randint(10_000, 500_000), rng.randint(1, 64)),
        lambda: (rng.randint(2700, 3100), rng.randint(2700, 3100)),
    ]
    for i in range(n):
        yield kinds[i % len(kinds)]()


def _plan(width: int, height: int, byte_size: int) -> tuple[int, int] | None:
    info = images.ImageInfo("png", width, height)
    return fit.fit_plan(info, byte_size=byte_size, max_base64=MIMO_MAX_IMAGE_BYTES)


def test_a_thousand_sizes_keep_their_token_count() -> None:
    planned = untouched = 0
    for width, height in _sizes(1000, seed=8):
        before = tokens.image_tokens(width, height)
        plan = _plan(width, height, byte_size=1000)
        if plan is None:
            # Sent as it is: only where MiMo keeps about its size, or where no size can
            # keep the count (a side rounded to 0).
            w_bar, h_bar = tokens.fitted_size(width, height)
            assert not tokens.downscaled_by_mimo(width, height) or 0 in (w_bar, h_bar)
            untouched += 1
        else:
            assert tokens.downscaled_by_mimo(width, height)
            assert plan[0] * plan[1] <= tokens.IMAGE_MAX_PIXELS
            assert tokens.image_tokens(*plan) == before, (width, height, plan)
            planned += 1
        # Too big to send: planned whatever its size, and still the same count.
        too_big = _plan(width, height, byte_size=MIMO_MAX_IMAGE_BYTES)
        if too_big is not None:
            assert tokens.image_tokens(*too_big) == before, (width, height, too_big)
    assert planned > 300 and untouched > 300  # both branches of the formula were covered


def _encoded(image: Image.Image, fmt: str, **params: object) -> io.BytesIO:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    out.seek(0)
    return out


def _fitted(fp: io.BytesIO) -> tuple[images.ImageInfo, images.ImageInfo]:
    """(the original's header, the fitted image's header read back from its bytes)."""
    info = images.probe(fp)
    data, fitted = fit.fit(fp, info, max_pixels=MAX_PIXELS)
    assert images.probe(io.BytesIO(data)) == fitted
    return info, fitted


@pytest.mark.parametrize(
    ("size", "fmt", "sent_as"),
    [
        ((4000, 3000), "JPEG", "jpeg"),
        ((8000, 6000), "JPEG", "jpeg"),  # decoded at half scale, still over the target
        ((2897, 2897), "PNG", "png"),  # just over IMAGE_MAX_PIXELS after rounding
        ((100_000, 90), "PNG", "png"),  # an extreme aspect ratio
        ((300, 40_000), "GIF", "png"),  # palette: resampled as RGB, sent lossless
        ((4000, 3000), "BMP", "png"),
    ],
)
def test_a_fitted_image_has_the_planned_size_and_count(
    size: tuple[int, int], fmt: str, sent_as: str
) -> None:
    image = Image.new("RGB", size, (200, 30, 30))
    fp = _encoded(image.convert("P") if fmt == "GIF" else image, fmt)
    info, fitted = _fitted(fp)
    assert (fitted.width, fitted.height) == _plan(*size, byte_size=len(fp.getvalue()))
    assert fitted.tokens == info.tokens == tokens.image_tokens(*size)
    assert fitted.format == sent_as


def test_lossless_webp_stays_lossless_and_lossy_webp_becomes_jpeg() -> None:
    image = Image.new("RGB", (4000, 3000), (10, 120, 40))
    assert _fitted(_encoded(image, "WEBP", lossless=True))[1].format == "png"
    assert _fitted(_encoded(image, "WEBP", quality=80))[1].format == "jpeg"


def test_alpha_is_kept() -> None:
    image = Image.new("RGBA", (4000, 3000), (10, 120, 40, 100))
    fp = _encoded(image, "WEBP", quality=80)
    data, fitted = fit.fit(fp, images.probe(fp), max_pixels=MAX_PIXELS)
    assert fitted.format == "png"
    assert Image.open(io.BytesIO(data)).getpixel((5, 5))[3] == 100


def test_a_lossless_image_whose_png_is_too_big_is_sent_as_jpeg() -> None:
    noise = Image.frombytes("RGB", (3000, 3000), random.Random(3).randbytes(3000 * 3000 * 3))
    fp = _encoded(noise, "PNG", compress_level=1)
    info = images.probe(fp)
    data, fitted = fit.fit(fp, info, max_pixels=MAX_PIXELS, max_base64=10 * 1024**2)
    assert fitted.format == "jpeg"
    assert images.base64_length(len(data)) <= 10 * 1024**2
    assert fitted.tokens == info.tokens


def test_exif_orientation_is_applied() -> None:
    """Stored landscape, left half red; orientation 6 shows it turned a quarter clockwise."""
    image = Image.new("RGB", (4000, 3000), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 2000, 3000))
    exif = Image.Exif()
    exif[0x0112] = 6
    info, fitted = _fitted(fp := _encoded(image, "JPEG", quality=90, exif=exif))
    assert (fitted.width, fitted.height) == tokens.fitted_size(3000, 4000)
    assert fitted.tokens == info.tokens
    data, _ = fit.fit(fp, info, max_pixels=MAX_PIXELS)
    shown = Image.open(io.BytesIO(data)).convert("RGB")
    red, _, blue = shown.getpixel((shown.width // 2, 10))
    assert red > 200 and blue < 60  # the stored left half is now the top
    red, _, blue = shown.getpixel((shown.width // 2, shown.height - 10))
    assert blue > 200 and red < 60


def test_validate_still_catches_a_cut_jpeg() -> None:
    """The reduced-scale validation decode reads the whole stream."""
    noise = Image.frombytes("RGB", (2000, 1500), random.Random(5).randbytes(2000 * 1500 * 3))
    whole = _encoded(noise, "JPEG", quality=90).getvalue()
    assert images.validate(io.BytesIO(whole), max_pixels=MAX_PIXELS).width == 2000
    for cut in (0.5, 0.99):
        with pytest.raises(InvalidImage, match="does not decode"):
            images.validate(io.BytesIO(whole[: int(len(whole) * cut)]), max_pixels=MAX_PIXELS)


# ---- through the real prepare step, on a real Redis ----


def _png_noise_band(path: Path, width: int, height: int, noise_rows: int) -> None:
    """An RGB PNG written by hand, fast at any size: `noise_rows` rows of noise in stored
    (uncompressed) deflate blocks, then rows of one colour that compress to nothing."""
    row = 3 * width
    noise = random.Random(12).randbytes(row * noise_rows)
    raw = b"".join(b"\x00" + noise[y * row : (y + 1) * row] for y in range(noise_rows))
    stream = bytearray(b"\x78\x01")
    for at in range(0, len(raw), 65535):
        block = raw[at : at + 65535]
        stream += struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF) + block
    adler = zlib.adler32(raw)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    first, same = b"\x00" + bytes([90, 140, 200]) * width, b"\x02" + bytes(row)  # then "Up"
    stream += deflate.compress(first)
    adler = zlib.adler32(first, adler)
    for _ in range(height - noise_rows - 1):
        stream += deflate.compress(same)
        adler = zlib.adler32(same, adler)
    stream += deflate.flush() + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", bytes(stream))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def runtime(redis_url: str, tmp_path: Path) -> Runtime:
    settings = Settings(
        redis_url=redis_url,
        storage_url=f"file://{tmp_path / 'store'}",
        upstream_base_url="http://127.0.0.1:9/v1",  # never called: only prepare runs here
        mimo_api_key=SIM_KEY,
    )
    return Runtime.from_settings(settings)


def _prepared(rt: Runtime, path: Path, resize: str) -> dict:
    """The job after the real prepare step, its image submitted as an upload."""
    request = JobRequest(prompt="p", images=[], resize=resize)
    with path.open("rb") as upload:
        job_id = (
            Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
            .submit(request, tenant="t", uploads=[upload])
            .id
        )
    pipeline.prepare(job_id, rt)
    return responses.job_object(rt.jobs.get(job_id, tenant="t"))


def test_a_png_too_big_as_base64_fails_under_never_and_goes_through_under_auto(
    runtime: Runtime, tmp_path: Path
) -> None:
    big = tmp_path / "12000x9000.png"
    _png_noise_band(big, 12_000, 9000, noise_rows=1230)
    size = big.stat().st_size
    assert size <= MIMO_MAX_IMAGE_BYTES < images.base64_length(size)
    never = _prepared(runtime, big, "never")
    assert never["status"] == "failed"
    assert never["error"]["type"] == "payload_too_large"
    auto = _prepared(runtime, big, "auto")
    assert auto["status"] == "running", auto
    image = auto["images"][0]
    assert image["resized"] is True
    assert image["format"] == "png"
    assert (image["width"], image["height"]) == tokens.fitted_size(12_000, 9000)
    assert image["image_tokens"] == tokens.image_tokens(12_000, 9000)
    assert images.base64_length(image["bytes"]) < MIMO_MAX_IMAGE_BYTES


def test_a_bmp_is_sent_as_png_and_a_small_image_untouched(runtime: Runtime, tmp_path: Path) -> None:
    bmp, small = tmp_path / "big.bmp", tmp_path / "small.png"
    Image.new("RGB", (4000, 3000), (1, 2, 3)).save(bmp)
    Image.new("RGB", (2000, 1500), (1, 2, 3)).save(small)
    image = _prepared(runtime, bmp, "auto")["images"][0]
    assert (image["format"], image["resized"]) == ("png", True)
    assert image["image_tokens"] == tokens.image_tokens(4000, 3000)
    kept = _prepared(runtime, small, "auto")["images"][0]
    assert (kept["format"], kept["resized"], kept["width"]) == ("png", False, 2000)
    assert kept["bytes"] == small.stat().st_size


@pytest.mark.parametrize("size", [(7541, 4440), (7012, 7251), (5317, 6362)])
def test_a_drafted_jpeg_is_fitted_to_the_size_of_its_header(size: tuple[int, int]) -> None:
    """Found in review: the target was computed from the drafted (reduced, rounded up)
    size, which for these sizes rounded to another one and changed the token count."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(out, "JPEG", quality=50)
    fp = io.BytesIO(out.getvalue())
    info = images.probe(fp)
    data, fitted = fit.fit(fp, info, max_pixels=10**9)
    assert (fitted.width, fitted.height) == tokens.fitted_size(*size)
    assert Image.open(io.BytesIO(data)).size == tokens.fitted_size(*size)
    assert fitted.tokens == tokens.image_tokens(*size)
