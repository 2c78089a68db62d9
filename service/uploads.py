"""Multipart uploads received straight into the image store, in large reads.

Each file part is written once, into the store's own spool (`ImageStore.spool`), and hashed
on the way, so storing it is a rename rather than a second copy (bench/intake.py, B2). The
size cap holds while the part streams in: a part over `max_image_bytes` is refused (413)
as soon as it crosses the cap, with what it wrote removed.

The body is read from gunicorn 1 MiB at a time (`buffered_uploads`), whatever Werkzeug's
parser asks for (64 KiB): gunicorn buffers up to 1 MiB ahead and hands out each smaller
read by copying what it still holds, so 64 KiB reads copied a 1 MB upload about sixteen
times (half of the upload's CPU, profiled under wrk). The parser itself keeps its 64 KiB
reads: once a boundary is in its buffer it runs a regular expression over the whole
buffer (2.8 ms a MiB), which 1 MiB reads would make it do over the whole image.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from flask import Request, current_app
from werkzeug.utils import cached_property

from visionq.storage import Spool

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

READ_BYTES = 1024 * 1024


class _RawInput(io.RawIOBase):
    """The WSGI input as a raw stream, for `io.BufferedReader` to read in large blocks."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def buffered_uploads(wsgi_app: WSGIApplication) -> WSGIApplication:
    """Middleware: a multipart body is read from the server READ_BYTES at a time, whatever
    the size of the parser's own reads."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("CONTENT_TYPE", "").startswith("multipart/"):
            environ["wsgi.input"] = io.BufferedReader(
                _RawInput(environ["wsgi.input"]), buffer_size=READ_BYTES
            )
        return wsgi_app(environ, start_response)

    return app


class UploadRequest(Request):
    """Flask's request, with its file parts received into the image store's spools."""

    @cached_property
    def _spools(self) -> list[Spool]:
        return []

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        services = current_app.extensions["visionq"]
        spool = services.store.spool(max_bytes=services.settings.max_image_bytes)
        # Closed at the request's end even when parsing fails before Werkzeug lists it.
        self._spools.append(spool)
        return spool  # type: ignore[return-value]

    def close(self) -> None:
        super().close()
        for spool in self._spools:
            spool.close()
