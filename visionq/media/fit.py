"""Auto-fit (`resize: auto`): an image MiMo would shrink, or one too big to send, resized on
the worker to exactly the size MiMo's formula gives it, so the token count never changes.

Pure Pillow: the image is opened through `images.opened`, so it gets the same single
decoder and bomb limit as a validation, and nothing here touches storage or the network.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from PIL import Image, ImageChops, ImageOps

from visionq import tokens
from visionq.media.images import ImageInfo, base64_length, data_url_prefix, decoding, opened
from visionq.settings import MIMO_MAX_IMAGE_BYTES


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
    with opened(fp, info.format, max_pixels=max_pixels) as image, decoding("the image"):
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
