"""An image refused is told in our words: never a library's module, constant, Python class,
object or the path of the file it was read from."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.support import CORPUS, pngcraft
from tests.support.pngcraft import MB
from visionq.errors import VisionqError
from visionq.media import fit, images

MAX_PIXELS = 178_956_970
INTERNALS = re.compile(
    r"PIL|Pillow|Plugin|MAX_[A-Z_]+|_io\.|object at 0x|<|>|/|\\|[A-Z]\w*(Error|Exception|Warning)"
)
PLAIN = pngcraft.small_png()


def _crafted() -> dict[str, bytes]:
    idat = PLAIN.index(b"IDAT")
    bad_crc = bytearray(PLAIN)
    bad_crc[29] ^= 0xFF  # the IHDR's checksum
    return {
        "png-iccp-inflating-to-2MB": pngcraft.inserted(PLAIN, [pngcraft.iccp(2 * MB)]),
        "png-cut-in-its-image-data": PLAIN[: idat + 40],
        "png-cut-in-a-chunk-header": PLAIN[: idat - 2],
        "png-bad-header-checksum": bytes(bad_crc),
        "png-signature-only": pngcraft.SIGNATURE,
    }


def _corpus() -> list[Path]:
    return sorted(
        p for p in (CORPUS / "bad").rglob("*") if p.is_file() and p.suffix not in (".md", ".tsv")
    )


def _refusals(open_fp: Callable[[], BinaryIO]) -> list[str]:
    """The message of each step that refuses the image: submit's probe, the worker's steps."""
    messages = []
    for step in (
        lambda fp: images.probe(fp, max_pixels=MAX_PIXELS),
        lambda fp: images.validate(fp, max_pixels=MAX_PIXELS),
        lambda fp: fit.fit(fp, images.probe(fp), max_pixels=MAX_PIXELS),
    ):
        with open_fp() as fp:
            try:
                step(fp)
            except VisionqError as exc:
                messages.append(exc.message)
    return messages


@pytest.mark.parametrize("name", list(_crafted()))
def test_crafted_pngs_are_refused_in_our_words(name: str) -> None:
    data = _crafted()[name]
    messages = _refusals(lambda: io.BytesIO(data))
    print(name, messages)
    assert messages, "refused by no step"
    assert not [m for m in messages if INTERNALS.search(m)], messages


# A corrupt EXIF block is only a warning (the image is accepted); errors here by default.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_the_corpus_is_refused_in_our_words() -> None:
    """Read from files on disk, as the worker does: a decoder would name the path."""
    leaks = {}
    for path in _corpus():
        bad = [m for m in _refusals(lambda p=path: p.open("rb")) if INTERNALS.search(m)]
        if bad:
            leaks[path.name] = bad
    assert not leaks, leaks
