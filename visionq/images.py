"""Image handling: sniffing, data URLs, hardened decode-validation, auto-fit, base64 streaming.

The intake only calls the cheap functions here: `sniff`, `parse_data_url`, `decode_base64`
and `probe`, which reads the header (tens of microseconds, no pixel decoded). The worker
calls `validate`, which decodes the whole first frame with only the decoder of the sniffed
format: a file that claims to be a PNG is never handed to the TIFF or PSD decoders, which
is where Pillow's fuzzing crashes live (see the corpus).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import resource
import signal
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, cast

from PIL import Image, ImageChops, ImageOps

from visionq import tokens
from visionq.errors import InvalidImage, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from visionq.pngtext import PngWithoutText
from visionq.settings import MIMO_MAX_IMAGE_BYTES

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
        with _opened(fp, fmt, max_pixels=max_pixels) as image:
            size = image.size
        fp.seek(0)
    elif max_pixels is not None and size[0] * size[1] > max_pixels:
        raise InvalidImage(
            f"decompression bomb: {size[0]}x{size[1]} pixels is over the {max_pixels}-pixel limit"
        )
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
    with _opened(fp, fmt, max_pixels=max_pixels) as image:
        info = ImageInfo(fmt, image.width, image.height)
        try:
            if fmt == "jpeg":
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"the {fmt} image does not decode: {_reason(exc)}") from None
        return info


@contextmanager
def _opened(fp: BinaryIO, fmt: str, *, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open with the one decoder of `fmt`; over `max_pixels` is a decompression bomb.

    We check the size from the header ourselves instead of through Pillow's warning:
    turning that warning into an error needs `warnings.catch_warnings`, which is not safe
    in the API's threads. Pillow's own check is switched off (the same value every time,
    so setting it from many threads is harmless) because ours replaces it.
    """
    Image.MAX_IMAGE_PIXELS = None
    try:
        source = cast(BinaryIO, PngWithoutText(fp)) if fmt == "png" else fp
        image = Image.open(source, formats=[FORMATS[fmt][0]])
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"the {fmt} image does not decode: {_reason(exc)}") from None
    with image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise InvalidImage(
                f"decompression bomb: {image.width}x{image.height} pixels is over the "
                f"{max_pixels}-pixel limit"
            )
        yield image


class _DecodeTimeout(BaseException):
    """A BaseException, so that no `except Exception` inside a decoder swallows it."""


@contextmanager
def decode_deadline(seconds: float) -> Iterator[None]:
    """Bound the decoding of one image in time: past `seconds` it is `InvalidImage`.

    A timer signal reaches only the main thread, which is where a prefork worker child
    runs its task; elsewhere (and with `seconds` <= 0) the task's own time limit is the
    bound. The signal interrupts between the decoder's chunks, not inside one C call.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True

    def expire(_signum: int, _frame: object) -> None:
        if armed:
            raise _DecodeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _DecodeTimeout:
        raise InvalidImage(f"the image takes over {seconds:g} s to decode") from None
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's timer was running: give back what is left of it
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space (0: no cap).

    Called in each prepare worker child: a decode that would exhaust the host then fails
    with MemoryError, which is an invalid image, instead of drawing the OOM killer onto
    the worker and every job it holds.
    """
    if max_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))


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


def fit_plan(info: ImageInfo, *, byte_size: int, max_base64: int) -> tuple[int, int] | None:
    """The (width, height) `resize=auto` shrinks this image to, or None to send it as it is.

    It applies when MiMo would downscale the image anyway, or when its base64 would be over
    `max_base64`. The target is always the formula's own (w_bar, h_bar), so the token
    count is unchanged. The image is left alone where that cannot hold: the formula rounds
    a side to zero pixels, or (a tiny image of extreme aspect ratio, upscaled) its size is
    one the formula would shrink again.
    """
    too_big = base64_length(byte_size) + len(data_url_prefix(info.format)) > max_base64
    if not (too_big or tokens.downscaled_by_mimo(info.width, info.height)):
        return None
    width, height = tokens.fitted_size(info.width, info.height)
    if not (width and height) or tokens.image_tokens(width, height) != info.tokens:
        return None
    return width, height


def fit(
    fp: BinaryIO, info: ImageInfo, *, max_pixels: int, max_base64: int = MIMO_MAX_IMAGE_BYTES
) -> tuple[bytes, ImageInfo]:
    """Resize to MiMo's fitted size (EXIF orientation applied) and re-encode.

    A lossless original (PNG, BMP, GIF, lossless WebP) or one with alpha becomes a PNG,
    unless that PNG's base64 would be over `max_base64`: then, like a lossy original (JPEG,
    lossy WebP), a JPEG at quality 90 (alpha dropped), as MiMo takes nothing bigger.
    A JPEG is decoded at the smallest DCT scale that is still at least the target size.
    """
    fp.seek(0)
    lossless = info.format in ("png", "bmp", "gif") or (
        info.format == "webp" and _webp_lossless(fp)
    )
    fp.seek(0)
    # The target comes from the header's size, never from a drafted (reduced, rounded up)
    # one: that could round to another size and change the token count.
    target = tokens.fitted_size(info.width, info.height)
    with _opened(fp, info.format, max_pixels=max_pixels) as image:
        try:
            if info.format == "jpeg":
                # The fitted size is the same with width and height swapped, so it is
                # the right bound whatever the EXIF orientation.
                image.draft(None, target)
            transposed = image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING
            image.load()
            # In place: without an orientation to apply, a copy would be the whole
            # decoded image once more.
            ImageOps.exif_transpose(image, in_place=True)
            size = (target[1], target[0]) if transposed else target
            resized = resample(image, size)
        except _DECODE_ERRORS as exc:
            raise InvalidImage(f"the image does not decode: {_reason(exc)}") from None
    if lossless or resized.mode in ("LA", "RGBA"):
        png = _encoded(resized, "PNG", compress_level=1)
        if base64_length(len(png)) + len(data_url_prefix("png")) <= max_base64:
            return png, ImageInfo("png", *resized.size)
    rgb = resized if resized.mode in ("RGB", "L") else resized.convert("RGB")
    return _encoded(rgb, "JPEG", quality=90), ImageInfo("jpeg", *resized.size)


_EXIF_ORIENTATION = 0x0112
#: EXIF orientations that swap width and height (the rotations by 90 and 270 degrees).
_TRANSPOSING = frozenset({5, 6, 7, 8})


def _webp_lossless(fp: BinaryIO) -> bool:
    """Whether a WebP's image chunk is VP8L (lossless), found by walking the RIFF chunks."""
    fp.seek(12)
    while len(header := fp.read(8)) == 8:
        fourcc, size = header[:4], int.from_bytes(header[4:], "little")
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc == b"VP8L"
        fp.seek(size + size % 2, io.SEEK_CUR)
    return False


def resample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size`, in L, LA, RGB or RGBA: the modes resampling works on and PNG and
    JPEG both carry at 8 bits.

    Pillow converts a wide sample (16-bit I;16 from a PNG, 32-bit I) by clipping it at
    255, so a 16-bit image that uses its range would reach MiMo all white. Such an image is
    resampled at its own precision and only then scaled to 8 bits, 0-65535 onto 0-255: I
    is read as 16-bit samples too (it is what Pillow made of a 16-bit PNG before I;16),
    anything outside that range clipped. A palette image is converted first: resampling
    its indices would be nearest neighbour.
    """
    if image.mode in _WIDE_MODES:
        alpha = _keyed_alpha(image) if "transparency" in image.info else None
        grey = _eight_bits(image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))
        if alpha is not None:
            grey.putalpha(alpha.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))
        return grey
    return _plain_mode(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


#: The modes whose samples are wider than 8 bits that an accepted format decodes to (I;16:
#: a 16-bit grey PNG), or did in earlier Pillows (I).
_WIDE_MODES = frozenset({"I;16", "I"})
_WIDE_TO_8_BITS = 255 / 65535


def _eight_bits(image: Image.Image) -> Image.Image:
    return image.convert("I").point(lambda v: v * _WIDE_TO_8_BITS).convert("L")


def _keyed_alpha(image: Image.Image) -> Image.Image:
    """The alpha of a wide grey image whose tRNS names one sample value as transparent:
    Pillow's own conversion to LA ignores it for I;16."""
    key = image.info["transparency"]
    wide = image.convert("I")
    # Converting to L clips at 0, so each side is nonzero exactly where the sample is not
    # the key, on its side of it.
    above = wide.point(lambda v: v - key).convert("L")
    below = wide.point(lambda v: key - v).convert("L")
    return ImageChops.lighter(above, below).point(lambda v: 255 if v else 0)


def _plain_mode(image: Image.Image) -> Image.Image:
    """L, LA, RGB or RGBA, with a transparent colour or palette entry (tRNS) made alpha."""
    keyed = "transparency" in image.info
    if image.mode in ("L", "LA", "RGB", "RGBA") and not keyed:
        return image
    grey = image.mode in ("1", "L", "LA")
    alpha = keyed or "A" in image.getbands()
    return image.convert(("L" if grey else "RGB") + ("A" if alpha else ""))


def _encoded(image: Image.Image, fmt: str, **params: int) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()
