"""The header-only JPEG size read agrees with Pillow's parser, and keeps the bomb check."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support import CORPUS
from visionq.errors import InvalidImage
from visionq.media import images


def _jpeg(mode: str, **params: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (333, 222), 90).save(out, "JPEG", **params)
    return out.getvalue()


EXIF = Image.Exif()
EXIF[0x0112] = 6


@pytest.mark.parametrize(
    "data",
    [
        _jpeg("RGB"),
        _jpeg("L"),
        _jpeg("CMYK"),
        _jpeg("RGB", progressive=True),
        _jpeg("RGB", exif=EXIF),
        *[p.read_bytes() for p in sorted(CORPUS.glob("*/*.jpg"))],
    ],
)
def test_the_header_read_matches_pillow(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        expected = image.size
    fp = io.BytesIO(data)
    info = images.probe(fp)
    assert (info.format, info.width, info.height) == ("jpeg", *expected)
    assert fp.tell() == 0  # left where the next reader expects it


def test_a_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(InvalidImage, match="decompression bomb"):
        images.probe(io.BytesIO(_jpeg("RGB")), max_pixels=333 * 222 - 1)


def test_a_header_the_walk_cannot_follow_goes_to_pillow() -> None:
    with pytest.raises(InvalidImage, match="does not decode"):
        images.probe(io.BytesIO(b"\xff\xd8\xff\xe0\x00\x01garbage"))


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _frame(width: int, height: int) -> bytes:
    return _segment(
        0xC0, b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x01\x01\x11\x00"
    )


def test_a_fill_byte_cannot_show_the_walk_another_frame_than_the_decoder() -> None:
    """Found in review: a fill byte 0xFF before the real frame made the walk read `FF FF` as
    a segment whose "length" jumped into a comment holding a decoy frame. Pillow skips
    fill bytes, so it saw the real 20000x20000 frame, and the bomb check was bypassed."""
    decoy = _frame(100, 100) + b"\xff\xda"
    jump = 0xC000 - 2  # what the walk took for the length of a segment `FF FF`
    padding = jump - 4 - len(_frame(20000, 20000))
    data = (
        b"\xff\xd8\xff"
        + _frame(20000, 20000)
        + _segment(0xFE, b"\x00" * padding + decoy + b"\x00" * 64)
        + b"\xff\xda\x00\x02"
    )
    assert Image.open(io.BytesIO(data)).size == (20000, 20000)  # what the decoder sees
    with pytest.raises(InvalidImage, match="decompression bomb"):
        images.probe(io.BytesIO(data), max_pixels=100_000_000)
    assert images.probe(io.BytesIO(data)).width == 20000
