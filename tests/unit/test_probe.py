"""The header-only JPEG size read agrees with Pillow's parser, and keeps the bomb check."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import CORPUS
from visionq import images
from visionq.errors import InvalidImage


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
