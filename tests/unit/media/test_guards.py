"""One image cannot stall or kill a worker: a decode deadline and an address-space cap."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from visionq.errors import InvalidImage
from visionq.media import guards, images


@pytest.fixture(scope="module")
def noisy_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noise compresses badly, so this PNG takes a while to decode (tenths of a second)."""
    path = tmp_path_factory.mktemp("bounds") / "noise.png"
    Image.effect_noise((2500, 2500), 80).convert("RGB").save(path, compress_level=1)
    return path


def test_a_decode_past_its_deadline_is_an_invalid_image(noisy_png: Path) -> None:
    handler = signal.getsignal(signal.SIGALRM)
    with noisy_png.open("rb") as fp, guards.decode_deadline(60):
        assert images.validate(fp, max_pixels=10**8).width == 2500
    with (
        pytest.raises(InvalidImage, match=r"takes over 0\.005 s"),
        noisy_png.open("rb") as fp,
        guards.decode_deadline(0.005),
    ):
        images.validate(fp, max_pixels=10**8)
    # Nothing of ours is left to fire later, and the previous handler is back.
    assert signal.getsignal(signal.SIGALRM) is handler


_UNDER_A_CAP = """
import sys
from visionq.errors import InvalidImage
from visionq.media import guards, images
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
guards.limit_memory(size * 1024 + 64 * 1024**2)  # 64 MiB above what this process has now
try:
    with open(sys.argv[1], "rb") as fp:
        images.validate(fp, max_pixels=10**9)
except InvalidImage as exc:
    print("invalid:", exc.message)
else:
    print("decoded")
"""


def test_a_decode_over_the_memory_cap_fails_the_image_not_the_process(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"  # 12,000 x 8,000 RGB: 288 MB decoded, a few KB on disk
    Image.new("RGB", (12_000, 8_000), (200, 30, 30)).save(wide)
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_A_CAP, str(wide)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("invalid:"), done.stdout
    assert "does not decode" in done.stdout
    assert "more memory than a worker may use" in done.stdout  # not Python's "MemoryError"
