"""Issue 14's image defects through the real stack: what the API answers, what reaches MiMo.

- A 16-bit PNG that auto-fit shrinks reaches the upstream with its pixels, not all white.
- PNG text chunks (tEXt, zTXt, iTXt), however large, decide nothing and cost no memory.
- A refusal says why in our words; a data URL without bytes is a bad request.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from tests.support import CORPUS, Process, Stack, pngcraft
from tests.support.pngcraft import MB
from visionq import tokens

PARAM = "messages[0].content[0].image_url.url"
INTERNALS = re.compile(r"PIL|Pillow|Plugin|MAX_[A-Z_]+|_io\.|object at 0x|<|>|/|[A-Z]\w*Error")


def _tokens(stack: Stack, name: str, data: bytes) -> requests.Response:
    with stack.session() as http:
        return http.post(
            f"{stack.base_url}/v1/tokens",
            files=[("image", (name, io.BytesIO(data)))],
            data={"prompt": "how many tokens"},
            timeout=60,
        )


def _job(stack: Stack, name: str, data: bytes, tmp_path: Path) -> requests.Response:
    path = tmp_path / name
    path.write_bytes(data)
    return stack.upload([path], {"prompt": "what is this"})


# --- item 7: 16-bit samples ---------------------------------------------------------------

SIZE = (3072, 2816)  # just over what MiMo downscales, so auto-fit applies


def test_a_16_bit_png_reaches_the_upstream_with_its_pixels(stack: Stack, tmp_path: Path) -> None:
    grey = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(SIZE)
    wide = grey.convert("I").point(lambda v: v * 257).convert("I;16")  # 0..65535
    out = io.BytesIO()
    wide.save(out, "PNG")
    response = _job(stack, "sixteen.png", out.getvalue(), tmp_path)
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job
    image = job["images"][0]
    assert image["resized"] is True
    assert image["image_tokens"] == tokens.image_tokens(*SIZE)
    # The simulator names the hash of the bytes it received: the fitted image we stored.
    assert f"sha256:{image['sha256'][:12]}" in job["result"]["content"]
    stored = stack.storage_root / "images" / image["sha256"][:2] / image["sha256"]
    with Image.open(stored) as sent:
        assert sent.size == tokens.fitted_size(*SIZE)
        truth = grey.resize(sent.size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        error = ImageStat.Stat(ImageChops.difference(sent.convert("L"), truth)).mean[0]
        mean = ImageStat.Stat(sent.convert("L")).mean[0]
    print(f"sent {image['format']} {sent.size}: mean {mean:.1f} (truth 127.5), error {error:.2f}")
    assert error <= 4.0
    assert 120 < mean < 135


# --- item 8: PNG text chunks --------------------------------------------------------------

TEXT = {
    "zTXt-inflating-to-60MB": lambda: [pngcraft.ztxt(60 * MB)],
    "iTXt-inflating-to-60MB": lambda: [pngcraft.itxt(60 * MB)],
    "tEXt-of-20MB": lambda: [pngcraft.text(20 * MB)],
}
PLAIN = pngcraft.small_png()


def _children(process: Process) -> list[int]:
    """The pids that do the work: gunicorn's workers, Celery's pool children."""
    pid = process.popen.pid
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _status(pid: int, field: str) -> int:
    line = next(
        x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field)
    )
    return int(line.split()[1])


def _reset_peaks(stack: Stack) -> dict[int, int]:
    """Each worker process's RSS now, its peak (VmHWM) set back to it."""
    rss = {}
    for process in stack.processes:
        if process.name in ("api", "worker-prepare"):
            for pid in _children(process):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                rss[pid] = _status(pid, "VmRSS")
    return rss


@pytest.mark.parametrize("where", ["before", "after"], ids=["before-IDAT", "after-IDAT"])
@pytest.mark.parametrize("name", list(TEXT))
def test_a_png_with_large_text_is_counted_and_succeeds_in_bounded_memory(
    stack: Stack, tmp_path: Path, name: str, where: str
) -> None:
    data = pngcraft.inserted(PLAIN, TEXT[name](), after_image_data=where == "after")
    rss = _reset_peaks(stack)
    counted = _tokens(stack, f"{name}.png", data)
    assert counted.status_code == 200, counted.text
    assert counted.json()["image_tokens"] == tokens.image_tokens(64, 64)
    response = _job(stack, f"{name}.png", data, tmp_path)
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert (job["images"][0]["width"], job["images"][0]["height"]) == (64, 64)
    grew = {pid: _status(pid, "VmHWM") - before for pid, before in rss.items()}
    print(f"{name} {where}: {len(data)} bytes; peak RSS growth per process (KiB) {grew}")
    # Reading the 20 MB text alone took 58 MB more at its peak; inflating, 60 MB or more.
    assert max(grew.values()) < 24 * 1024


# --- item 8: refusals in our words --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("broken.png", (CORPUS / "bad" / "broken.png").read_bytes()),
        ("iccp-inflating-to-2MB.png", pngcraft.inserted(PLAIN, [pngcraft.iccp(2 * MB)])),
        ("signature-only.png", pngcraft.SIGNATURE),
    ],
)
def test_a_refused_image_is_told_in_our_words(stack: Stack, name: str, data: bytes) -> None:
    response = _tokens(stack, name, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    print(name, error)
    assert error["type"] == "invalid_image"
    assert error["message"].startswith("the png image does not decode: ")
    assert not INTERNALS.search(error["message"]), error["message"]


# --- item 9: a data URL without bytes -----------------------------------------------------


@pytest.mark.parametrize("url", ["data:image/png;base64,", "data:;base64,"])
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/tokens"])
def test_a_data_url_without_bytes_is_a_bad_request(stack: Stack, path: str, url: str) -> None:
    with stack.session() as http:
        shorthand = http.post(
            f"{stack.base_url}{path}", json={"prompt": "x", "images": [url]}, timeout=30
        )
        good = {"type": "image_url", "image_url": {"url": pngcraft.data_url(PLAIN)}}
        bad = {"type": "image_url", "image_url": {"url": url}}
        messages = http.post(
            f"{stack.base_url}{path}",
            json={
                "messages": [
                    {"role": "user", "content": [good, {"type": "text", "text": "x"}, bad]}
                ]
            },
            timeout=30,
        )
    for response, param in ((shorthand, PARAM), (messages, "messages[0].content[2].image_url.url")):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request"
        assert response.json()["error"]["param"] == param
