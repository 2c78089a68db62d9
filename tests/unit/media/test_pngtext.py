"""PNG text chunks decide nothing: a valid image is accepted whatever its tEXt, zTXt or iTXt
hold or claim, and they cost no memory, at submit (`probe`) as in the worker (`validate`,
`fit`)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.support import pngcraft
from tests.support.pngcraft import MB
from visionq.media import fit, images
from visionq.media.pngtext import PngWithoutText

MAX_PIXELS = 178_956_970
PLAIN = pngcraft.small_png()

TEXT = {
    "zTXt inflating to 60 MB": lambda: [pngcraft.ztxt(60 * MB)],
    "iTXt inflating to 60 MB": lambda: [pngcraft.itxt(60 * MB)],
    "tEXt of 20 MB": lambda: [pngcraft.text(20 * MB)],
    # Each under Pillow's 1 MB per chunk, 70 MB of text in all.
    "70 zTXt of 1 MB": lambda: [pngcraft.ztxt(MB)] * 70,
    "zTXt of an unknown compression method": lambda: [
        pngcraft.chunk(b"zTXt", b"Comment\0\x07not deflated")
    ],
    "iTXt of broken UTF-8": lambda: [pngcraft.chunk(b"iTXt", b"Comment\0\0\0\0\0\xff\xfe")],
}


@pytest.fixture(scope="module")
def crafted() -> dict[tuple[str, str], bytes]:
    return {
        (name, where): pngcraft.inserted(PLAIN, make(), after_image_data=where == "after")
        for name, make in TEXT.items()
        for where in ("before", "after")
    }


def _outcome(data: bytes) -> tuple[images.ImageInfo, images.ImageInfo, bytes]:
    probed = images.probe(io.BytesIO(data), max_pixels=MAX_PIXELS)
    validated = images.validate(io.BytesIO(data), max_pixels=MAX_PIXELS)
    fitted, _ = fit.fit(io.BytesIO(data), probed, max_pixels=MAX_PIXELS)
    return probed, validated, fitted


@pytest.mark.parametrize("where", ["before", "after"], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("name", list(TEXT))
def test_a_png_is_judged_as_if_it_had_no_text(
    crafted: dict[tuple[str, str], bytes], name: str, where: str
) -> None:
    """Same header, same clean decode, the very same fitted bytes as the image without it."""
    assert _outcome(crafted[(name, where)]) == _outcome(PLAIN)


_PEAK = """
import json, sys
from visionq.media import fit, images
from visionq.media.pngtext import PngWithoutText

def judge(path):
    with open(path, "rb") as fp:
        info = images.probe(fp, max_pixels=10**8)
        fp.seek(0)
        images.validate(fp, max_pixels=10**8)
        fit.fit(fp, info, max_pixels=10**8)

def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1])

judge(sys.argv[1])  # the plain image: every decoder and buffer warmed up
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak RSS (VmHWM) starts again from the RSS now
before = status("VmRSS")
judge(sys.argv[2])
print(json.dumps({"rss_kib": before, "grew_kib": status("VmHWM") - before}))
"""


@pytest.mark.parametrize("name", ["zTXt inflating to 60 MB", "tEXt of 20 MB", "70 zTXt of 1 MB"])
def test_text_costs_no_memory(
    crafted: dict[tuple[str, str], bytes], name: str, tmp_path: Path
) -> None:
    """Judged in a process of its own, whose peak RSS grows by under 2 MiB (a tenth of the
    smallest text here): the text is never read, let alone inflated."""
    plain, laden = tmp_path / "plain.png", tmp_path / "laden.png"
    plain.write_bytes(PLAIN)
    laden.write_bytes(crafted[(name, "before")])
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(plain), str(laden)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak = json.loads(done.stdout)
    print(f"{name}: RSS {peak['rss_kib']} KiB, its peak grew by {peak['grew_kib']} KiB")
    assert peak["grew_kib"] < 2 * 1024


def test_the_decoder_reads_the_file_less_its_text_chunks_and_nothing_else() -> None:
    laden = pngcraft.inserted(
        pngcraft.inserted(PLAIN, [pngcraft.text(1000), pngcraft.ztxt(MB)]),
        [pngcraft.itxt(10), pngcraft.chunk(b"tIME", bytes(7))],
        after_image_data=True,
    )
    stripped = pngcraft.SIGNATURE + b"".join(
        pngcraft.chunk(kind, data)
        for kind, data in pngcraft.chunks(laden)
        if kind not in (b"tEXt", b"zTXt", b"iTXt")
    )
    view = PngWithoutText(io.BytesIO(laden + b"trailing bytes"))
    assert view.read() == stripped + b"trailing bytes"
    for pos in (0, 7, 8, 33, len(stripped) - 12, len(stripped) + 3):
        assert view.seek(pos) == pos == view.tell()
        assert view.read(50) == (stripped + b"trailing bytes")[pos : pos + 50]
    assert view.seek(-5, io.SEEK_END) == len(stripped) + 9
    assert view.read() == b"bytes"


def test_text_between_thousands_of_chunks_does_not_grow_the_index() -> None:
    """Empty text chunks between 50,000 private ones: each kept stretch is a run of the
    view's index, so a file built that way could make the index many times its size in
    the API's memory. Past `MAX_RUNS` the rest is read as it is: the probe then costs what
    Pillow's own parsing of the file costs (it keeps private chunks), and little more."""
    pairs = [pngcraft.chunk(b"tEXt", b""), pngcraft.chunk(b"prVt", b"")] * 50_000
    png = pngcraft.inserted(pngcraft.small_png(), pairs)

    def peak(read: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    probed = peak(lambda: images.probe(io.BytesIO(png), max_pixels=10**8))
    plain = peak(lambda: Image.open(io.BytesIO(png)).size)
    assert images.probe(io.BytesIO(png)).width == 64
    assert probed < plain + 512 * 1024, f"{probed} bytes traced; Pillow alone {plain}"
