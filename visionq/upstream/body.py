"""The upstream request body, written to a file with each image's base64 streamed in.

The prepare stage, which is CPU-bound, writes the body once; the upstream stage, which is
I/O-bound, then only streams a finished file over a pooled connection and never holds or
encodes a 50 MB image. Inside a job's stored request an image part points at job image n
by the URL `image_ref(n)`; the intake writes those references, and `write_body` replaces
each with the image itself.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import BinaryIO

from visionq.media import images
from visionq.models import StoredRequest
from visionq.upstream.dialects import ImageSlot, dialect_for

#: How an image part points at job image n inside a stored request.
IMAGE_REF = "visionq:image:"

#: Opens job image n as it is to be sent.
ImageOpener = Callable[[int], BinaryIO]


def image_ref(index: int) -> str:
    return f"{IMAGE_REF}{index}"


def _ref_index(url: str) -> int:
    return int(url[len(IMAGE_REF) :])


def write_body(
    out: BinaryIO,
    *,
    api: str,
    model: str,
    request: StoredRequest,
    formats: list[str],
    open_image: ImageOpener,
) -> None:
    """Write the upstream JSON for `api`, each image's base64 streamed in at its place.

    The body is serialised once with random markers where the images go, then written
    piece by piece, so the base64 text is never part of a Python string.
    """
    dialect = dialect_for(api)
    marker = f"VQIMG{secrets.token_hex(8)}X"

    def slot(url: str) -> ImageSlot:
        index = _ref_index(url)
        return ImageSlot(f"{marker}{index}", formats[index])

    # ASCII escapes: a lone surrogate in a prompt stays a valid JSON escape, not a crash.
    text = json.dumps(dialect.body(model, request, slot), separators=(",", ":"))
    pieces = re.split(f"{marker}(\\d+)", text)
    out.write(pieces[0].encode())
    for i in range(1, len(pieces), 2):
        index = int(pieces[i])
        out.write(dialect.image_prefix(formats[index]).encode())
        with open_image(index) as fp:
            images.write_base64(fp, out)
        out.write(pieces[i + 1].encode())
