"""Auto-fit keeps the pixels, in every mode an accepted format decodes to.

Each case is a real file (saved by Pillow, or built byte by byte where Pillow cannot write
that variant), big enough that auto-fit shrinks it. Its fitted image, read back from the
bytes `fit` returns, is compared with the original downscaled, both as 8-bit RGBA with
the colour premultiplied by alpha: a mean absolute error per channel, not a token count.
A 16-bit image clipped to 8 bits comes out all white, about 127 off on a gradient.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from PIL import Image, ImageChops, ImageStat

from visionq import tokens
from visionq.media import fit, images
from visionq.settings import MIMO_MAX_IMAGE_BYTES

MAX_PIXELS = 178_956_970
#: Just over what MiMo downscales, so that every case is fitted, and as small as that allows.
SIZE = (3072, 2816)
#: Mean absolute error per channel allowed (0-255 scale): the lossless cases measure
#: about 0.1, the JPEG ones about 1 (see the report); a clipped 16-bit image about 127.
MAX_ERROR = 4.0


def _ramp(size: tuple[int, int], *, vertical: bool = False, reverse: bool = False) -> Image.Image:
    """A smooth 0-255 gradient across the image."""
    ramp = Image.linear_gradient("L")  # 256x256, black at the top
    if not vertical:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90)
    if reverse:
        ramp = ramp.transpose(Image.Transpose.ROTATE_180)
    return ramp.resize(size, Image.Resampling.BILINEAR)


GREY = _ramp(SIZE)
RGB = Image.merge("RGB", (GREY, _ramp(SIZE, vertical=True), _ramp(SIZE, reverse=True)))
ALPHA = _ramp(SIZE, vertical=True, reverse=True)
RGBA = Image.merge("RGBA", (*RGB.split(), ALPHA))
LA = Image.merge("LA", (GREY, ALPHA))
#: Large squares, so a bilevel image's downscale is a fair comparison.
CHECKER = Image.new("L", (24, 22))
CHECKER.putdata([255 * ((x + y) % 2) for y in range(22) for x in range(24)])
CHECKER = CHECKER.resize(SIZE, Image.Resampling.NEAREST)


def _saved(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(image: Image.Image, color_type: int) -> bytes:
    """A 16-bit PNG of an 8-bit image, each sample v as v * 257 (which Pillow cannot write
    for RGB, RGBA or LA): the 16-bit big-endian sample is the 8-bit one twice."""
    raw = image.tobytes()
    wide = bytearray(2 * len(raw))
    wide[0::2] = raw
    wide[1::2] = raw
    row = len(wide) // image.height
    rows = bytearray((row + 1) * image.height)  # a zero filter byte before each row
    for y in range(image.height):
        rows[y * (row + 1) + 1 : (y + 1) * (row + 1)] = wide[y * row : (y + 1) * row]
    header = struct.pack(">IIBBBBB", image.width, image.height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 1))
        + _chunk(b"IEND", b"")
    )


def _wide(image: Image.Image) -> Image.Image:
    """An 8-bit grey image as I;16, each sample v as v * 257."""
    return image.convert("I").point(lambda v: v * 257).convert("I;16")


def _gif_without_palette(image: Image.Image) -> bytes:
    """A GIF with no colour table at all, which Pillow decodes as L (it writes one always):
    Pillow's grey GIF, indices equal to the grey values, with its global table cut out."""
    gif = _saved(image, "GIF", optimize=False)
    flags = gif[10]
    assert flags & 0x80, "Pillow wrote no global colour table"
    table = 3 * 2 ** ((flags & 0x07) + 1)
    return gif[:10] + bytes([flags & 0x78]) + gif[11:13] + gif[13 + table :]


def _bmp_with_alpha(image: Image.Image) -> bytes:
    """A 32-bit BMP with an alpha mask (BITMAPV4HEADER, BI_BITFIELDS), which Pillow reads
    as RGBA (it writes 32-bit BMPs without the mask)."""
    r, g, b, a = image.split()
    pixels = Image.merge("RGBA", (b, g, r, a)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    data = pixels.tobytes()
    info = struct.pack(
        "<IiiHHIIiiII4I",
        108,
        image.width,
        image.height,
        1,
        32,
        3,  # BI_BITFIELDS
        len(data),
        2835,
        2835,
        0,
        0,
        0x00FF0000,
        0x0000FF00,
        0x000000FF,
        0xFF000000,
    )
    info += b"BGRs" + bytes(36 + 12)  # colour space, endpoints and gamma: unused
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + data


def _keyed(image: Image.Image, key: object) -> Image.Image:
    keyed = image.copy()
    keyed.info["transparency"] = key
    return keyed


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    decodes_to: str
    #: The original as 8-bit RGBA, when Pillow's own conversion of the decoded file is not
    #: the truth (wide samples, which it clips).
    truth: Callable[[], Image.Image] | None = None


CASES = [
    Case("jpeg-L", lambda: _saved(GREY, "JPEG", quality=95), "L"),
    Case("jpeg-RGB", lambda: _saved(RGB, "JPEG", quality=95), "RGB"),
    Case("jpeg-CMYK", lambda: _saved(RGB.convert("CMYK"), "JPEG", quality=95), "CMYK"),
    Case("png-1", lambda: _saved(CHECKER.convert("1"), "PNG"), "1"),
    Case("png-L", lambda: _saved(GREY, "PNG"), "L"),
    Case("png-L-tRNS", lambda: _saved(GREY, "PNG", transparency=100), "L"),
    Case("png-LA", lambda: _saved(LA, "PNG"), "LA"),
    Case("png-P", lambda: _saved(RGB.quantize(), "PNG"), "P"),
    Case("png-P-tRNS", lambda: _saved(RGB.quantize(), "PNG", transparency=0), "P"),
    Case("png-RGB", lambda: _saved(RGB, "PNG"), "RGB"),
    Case("png-RGB-tRNS", lambda: _saved(RGB, "PNG", transparency=(0, 0, 255)), "RGB"),
    Case("png-RGBA", lambda: _saved(RGBA, "PNG"), "RGBA"),
    Case("png-16-grey", lambda: _saved(_wide(GREY), "PNG"), "I;16", lambda: GREY),
    Case(
        "png-16-grey-tRNS",
        lambda: _saved(_wide(GREY), "PNG", transparency=100 * 257),
        "I;16",
        lambda: _keyed(GREY, 100),
    ),
    Case("png-16-grey-alpha", lambda: _png16(LA, 4), "RGBA", lambda: LA),
    Case("png-16-RGB", lambda: _png16(RGB, 2), "RGB", lambda: RGB),
    Case("png-16-RGBA", lambda: _png16(RGBA, 6), "RGBA", lambda: RGBA),
    Case("gif-P", lambda: _saved(RGB.quantize(), "GIF"), "P"),
    Case("gif-P-transparency", lambda: _saved(RGB.quantize(), "GIF", transparency=0), "P"),
    Case("gif-L", lambda: _gif_without_palette(GREY), "L"),
    Case("webp-RGB-lossy", lambda: _saved(RGB, "WEBP", quality=95), "RGB"),
    Case("webp-RGB-lossless", lambda: _saved(RGB, "WEBP", lossless=True), "RGB"),
    Case("webp-RGBA-lossless", lambda: _saved(RGBA, "WEBP", lossless=True), "RGBA"),
    Case("bmp-1", lambda: _saved(CHECKER.convert("1"), "BMP"), "1"),
    Case("bmp-L", lambda: _saved(GREY, "BMP"), "L"),
    Case("bmp-P", lambda: _saved(RGB.quantize(), "BMP"), "P"),
    Case("bmp-RGB", lambda: _saved(RGB, "BMP"), "RGB"),
    Case("bmp-RGBA", lambda: _bmp_with_alpha(RGBA), "RGBA"),
]


def _premultiplied(image: Image.Image) -> list[Image.Image]:
    """R, G, B times alpha, and alpha: where a pixel is transparent its colour is moot."""
    *colour, alpha = image.convert("RGBA").split()
    return [*(ImageChops.multiply(band, alpha) for band in colour), alpha]


def _errors(got: Image.Image, want: Image.Image) -> list[float]:
    """Mean absolute error of each premultiplied channel of `got` against `want` at its size."""
    want = want.convert("RGBA").resize(got.size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return [
        ImageStat.Stat(ImageChops.difference(a, b)).mean[0]
        for a, b in zip(_premultiplied(got), _premultiplied(want), strict=True)
    ]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_fitted_image_keeps_the_pixels_of_the_original(case: Case) -> None:
    data = case.make()
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == case.decodes_to  # the enumeration still holds in this Pillow
        truth = case.truth() if case.truth else original.convert("RGBA")
    fp = io.BytesIO(data)
    info = images.probe(fp)
    assert fit.fit_plan(info, byte_size=len(data), max_base64=MIMO_MAX_IMAGE_BYTES)
    fitted, fitted_info = fit.fit(fp, info, max_pixels=MAX_PIXELS)
    assert fitted_info.tokens == tokens.image_tokens(*SIZE)
    with Image.open(io.BytesIO(fitted)) as got:
        assert got.size == tokens.fitted_size(*SIZE)
        errors = _errors(got, truth)
    print(f"{case.name}: sent as {fitted_info.format} {got.mode}, error per channel {errors}")
    assert max(errors) <= MAX_ERROR, errors


def _wide_gradient(mode: str, top: int) -> Image.Image:
    """A horizontal gradient 0..top in a wide in-memory mode."""
    return GREY.convert("I").point(lambda v: v * top / 255).convert(mode)


@pytest.mark.parametrize(
    ("mode", "top", "expected"),
    [
        ("I;16", 65535, GREY),
        # I is read as 16-bit samples, as Pillow once decoded a 16-bit PNG: a 0..65535
        # gradient is the grey ramp, and samples past 65535 are clipped to white.
        ("I", 65535, GREY),
        ("I", 2 * 65535, GREY.point(lambda v: min(255, 2 * v))),
    ],
)
def test_resampling_scales_wide_samples_to_eight_bits(
    mode: str, top: int, expected: Image.Image
) -> None:
    """No accepted format decodes to I in Pillow 13, so that mode is built in memory."""
    size = tokens.fitted_size(*SIZE)
    got = fit.resample(_wide_gradient(mode, top), size)
    assert got.mode == "L"
    errors = _errors(got, expected)
    assert max(errors) <= MAX_ERROR, errors
