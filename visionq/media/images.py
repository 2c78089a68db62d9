"""What an image is: its format sniffed from its bytes, data URLs, the header probe, and the
hardened decode that validates it.

The intake only calls the cheap functions here: `sniff`, `parse_data_url`, `decode_base64`
and `probe`, which reads the header (tens of microseconds, no pixel decoded). The worker
calls `validate`, which decodes the whole first frame with only the decoder of the sniffed
format: a file that claims to be a PNG is never handed to the TIFF or PSD decoders, which
is where Pillow's fuzzing crashes live (see the corpus).

Resizing lives in `fit`, which opens images through `opened` and words its failures
through `decoding` as this module does, so every decode has the same bomb check and the
same messages. The process-level limits on a decode (its time, the worker's memory) live
in `guards`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, cast

from PIL import Image

from visionq import tokens
from visionq.errors import InvalidImage, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from visionq.media.pngtext import PngWithoutText

#: Our format name -> (Pillow's plugin name, MIME type). MiMo accepts exactly these.
FORMATS: dict[str, tuple[str, str]] = {
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "gif": ("GIF", "image/gif"),
    "webp": ("WEBP", "image/webp"),
    "bmp": ("BMP", "image/bmp"),
}
SNIFF_BYTES = 16
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,")
# What Pillow's decoders raise on hostile bytes; anything in here means "does not decode".
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    MemoryError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def sniff(head: bytes) -> str:
    """The accepted format of these leading bytes, or `UnsupportedMediaType`."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    raise UnsupportedMediaType(
        "not an accepted image format (JPEG, PNG, GIF, WebP, BMP), judged from its bytes"
    )


def mime_type(fmt: str) -> str:
    return FORMATS[fmt][1]


def parse_data_url(url: str, *, max_chars: int) -> str:
    """The base64 payload of a `data:<mime>;base64,` URL, its length checked first."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidRequest("a data URL must look like data:<mime>;base64,<data>")
    payload = url[match.end() :]
    if not payload:
        # Nothing to sniff: a malformed URL (400), not bytes of a format we refuse (415).
        raise InvalidRequest("the data URL holds no bytes after base64,")
    if len(payload) > max_chars:
        raise PayloadTooLarge(f"the base64 string is over the {max_chars}-byte limit")
    return payload


def decode_base64(payload: str) -> bytes:
    """Strict base64: whitespace or foreign characters are a client error, not silently dropped."""
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"malformed base64 in data URL: {exc}") from None


def base64_length(n_bytes: int) -> int:
    return 4 * ((n_bytes + 2) // 3)


def data_url_prefix(fmt: str) -> str:
    return f"data:{mime_type(fmt)};base64,"


def write_base64(src: BinaryIO, dst: BinaryIO, chunk_bytes: int = 3 * 256 * 1024) -> None:
    """Base64-encode `src` into `dst` in chunks, so a 50 MB image is never held twice."""
    while block := src.read(chunk_bytes):
        dst.write(base64.b64encode(block))


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def tokens(self) -> int:
        return tokens.image_tokens(self.width, self.height)


def probe(fp: BinaryIO, *, max_pixels: int | None = None) -> ImageInfo:
    """Format and size from the header only (tens of microseconds): no pixel is decoded.

    Enough for the token count, and for refusing a decompression bomb before it is stored.
    """
    fmt = sniff(fp.read(SNIFF_BYTES))
    fp.seek(0)
    size = _jpeg_size(fp) if fmt == "jpeg" else None
    fp.seek(0)
    if size is None:
        with opened(fp, fmt, max_pixels=max_pixels) as image:
            size = image.size
        fp.seek(0)
    else:
        _refuse_bomb(size, max_pixels)
    return ImageInfo(fmt, *size)


#: Start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
#: Every marker before the scan that carries a length, as Pillow reads it: tables (DHT,
#: DAC, DQT, DRI), application segments and comments. Any other byte pair there (a fill
#: byte 0xFF, RSTn, SOI, TEM) Pillow reads differently, so the walk stops and Pillow
#: decides: a walk that parsed a file otherwise than the decoder could be shown one size
#: while the decoder sees another.
_JPEG_SEGMENTS = _JPEG_SOF | {0xC4, 0xCC, 0xDA, 0xDB, 0xDD, 0xFE} | set(range(0xE0, 0xF0))


def _jpeg_size(fp: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the JPEG's frame header, found by walking the segment headers
    up to the scan: a few reads, where Pillow's parser also decodes the tables and the Exif
    block (three times as long on a camera JPEG, profiled in bench/tokens.py). None when
    the walk meets anything unusual: Pillow's parser then decides.
    """
    if fp.read(2) != b"\xff\xd8":
        return None
    size = None
    while len(header := fp.read(4)) == 4 and header[0] == 0xFF:
        marker, length = header[1], int.from_bytes(header[2:], "big")
        if marker not in _JPEG_SEGMENTS or length < 2:
            return None
        if marker == 0xDA:  # start of scan: the header is over
            return size
        if marker in _JPEG_SOF:
            frame = fp.read(length - 2)
            if size is not None or len(frame) < 6 or frame[5] not in (1, 3, 4):
                return None
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            if not (width and height):
                return None
            size = (width, height)
        else:
            fp.seek(length - 2, io.SEEK_CUR)
    return None


def validate(fp: BinaryIO, *, max_pixels: int) -> ImageInfo:
    """Decode the first frame through to its end; anything short of a clean decode is
    `InvalidImage`.

    `verify()` is not enough: a JPEG cut in half passes it, and only `load()` notices. A
    JPEG is decoded at an eighth of its size (`draft`): the decoder still reads and
    entropy-decodes every scan, so truncation and corrupt data are caught as in a full
    decode, for less than half the time and a sixty-fourth of the pixel memory.
    """
    fmt = sniff(fp.read(SNIFF_BYTES))
    fp.seek(0)
    with opened(fp, fmt, max_pixels=max_pixels) as image:
        info = ImageInfo(fmt, image.width, image.height)
        with decoding(f"the {fmt} image"):
            if fmt == "jpeg":
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        return info


@contextmanager
def opened(fp: BinaryIO, fmt: str, *, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open with the one decoder of `fmt`; over `max_pixels` is a decompression bomb.

    We check the size from the header ourselves instead of through Pillow's warning:
    turning that warning into an error needs `warnings.catch_warnings`, which is not safe
    in the API's threads. Pillow's own check is switched off (the same value every time,
    so setting it from many threads is harmless) because ours replaces it.
    """
    Image.MAX_IMAGE_PIXELS = None
    with decoding(f"the {fmt} image"):
        source = cast(BinaryIO, PngWithoutText(fp)) if fmt == "png" else fp
        image = Image.open(source, formats=[FORMATS[fmt][0]])
    with image:
        _refuse_bomb(image.size, max_pixels)
        yield image


def _refuse_bomb(size: tuple[int, int], max_pixels: int | None) -> None:
    """The one decompression-bomb check, whether the size came from our JPEG header walk
    or from Pillow's parser."""
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise InvalidImage(
            f"decompression bomb: {size[0]}x{size[1]} pixels is over the {max_pixels}-pixel limit"
        )


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Whatever a decoder raises on hostile bytes, inside the block, as `InvalidImage`
    saying that `what` does not decode, and why in our words."""
    try:
        yield
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"{what} does not decode: {_reason(exc)}") from None


#: What a decoder's complaint means, in our words. Its own text names its internals (module
#: constants, Python objects, a temporary file's path), which are nobody's business and
#: change between Pillow versions; anything not matched here is plain corruption.
_REASONS = (
    (
        re.compile(r"truncat|incomplete|premature|not enough|end of|unpack requires", re.I),
        "the file ends before its image data does",
    ),
    (
        re.compile(r"decompressed data too large|too much memory", re.I),
        "a compressed block in it inflates past the size we decode",
    ),
    (
        re.compile(r"unsupported|not supported|unknown|cannot handle|unrecognized mode", re.I),
        "it uses a variant of its format that we do not decode",
    ),
)
_CORRUPT = "its data is corrupt"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "decoding it needs more memory than a worker may use"
    if isinstance(exc, EOFError):
        return _REASONS[0][1]
    text = str(exc)
    return next((reason for pattern, reason in _REASONS if pattern.search(text)), _CORRUPT)
