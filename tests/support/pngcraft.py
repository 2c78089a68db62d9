"""Real PNG files with crafted chunks, for the tests of what metadata may (not) decide."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MB = 1_000_000


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk of a PNG."""
    found, pos = [], len(SIGNATURE)
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        found.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def inserted(png: bytes, extra: list[bytes], *, after_image_data: bool = False) -> bytes:
    """`png` with the `extra` chunks put before its first IDAT, or after its last one."""
    parts = [chunk(kind, data) for kind, data in chunks(png)]
    kinds = [kind for kind, _ in chunks(png)]
    at = len(kinds) - 1 if after_image_data else kinds.index(b"IDAT")
    return SIGNATURE + b"".join(parts[:at] + extra + parts[at:])


def small_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """An RGB gradient, so that a decode that went wrong shows in the pixels."""
    ramp = Image.linear_gradient("L").resize(size)
    out = io.BytesIO()
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), ramp)).save(out, "PNG")
    return out.getvalue()


def _deflated(n_bytes: int) -> bytes:
    """`n_bytes` of text, compressed in pieces so that the test never holds them whole."""
    squeeze = zlib.compressobj(9)
    piece = b"metadata " * 100_000
    out = []
    for start in range(0, n_bytes, len(piece)):
        out.append(squeeze.compress(piece[: n_bytes - start]))
    out.append(squeeze.flush())
    return b"".join(out)


def text(n_bytes: int, keyword: bytes = b"Comment") -> bytes:
    """A tEXt chunk of `n_bytes` of text."""
    return chunk(b"tEXt", keyword + b"\0" + (b"metadata " * (n_bytes // 9 + 1))[:n_bytes])


def ztxt(inflated: int, keyword: bytes = b"Comment") -> bytes:
    """A zTXt chunk whose text inflates to `inflated` bytes."""
    return chunk(b"zTXt", keyword + b"\0\0" + _deflated(inflated))


def itxt(inflated: int, keyword: bytes = b"Comment") -> bytes:
    """A compressed iTXt chunk (language en, no translated keyword) inflating to `inflated`."""
    return chunk(b"iTXt", keyword + b"\0\x01\x00en\0\0" + _deflated(inflated))


def iccp(inflated: int) -> bytes:
    """An iCCP colour profile inflating to `inflated` bytes (not a valid profile)."""
    return chunk(b"iCCP", b"profile\0\0" + _deflated(inflated))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
