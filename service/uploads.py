"""Multipart uploads received straight into the image store, in large reads.

Each file part is written once, into the store's own spool (`BlobStore.spool`), and hashed
on the way, so storing it is a rename rather than a second copy (bench/intake.py, B2). The
size cap holds while the part streams in: a part over `max_image_bytes` is refused (413)
as soon as it crosses the cap, with what it wrote removed.

The body is read from gunicorn 1 MiB at a time (`buffered_uploads`), whatever Werkzeug's
parser asks for (64 KiB): gunicorn buffers up to 1 MiB ahead and hands out each smaller
read by copying what it still holds, so 64 KiB reads copied a 1 MB upload about sixteen
times (half of the upload's CPU, profiled under wrk). The parser itself keeps its 64 KiB
reads: once a boundary is in its buffer it runs a regular expression over the whole
buffer (2.8 ms a MiB), which 1 MiB reads would make it do over the whole image.

Every body, of any form, must arrive within `Settings.body_read_timeout` (`body_deadline`):
a client that trickles a byte every few seconds would otherwise hold a server thread for
as long as it likes. A socket timeout alone does not bound that, since each byte resets
it and gunicorn loops on `recv` until it holds what was asked for; so one thread per
process (`_Cutoffs`) shuts the socket's read side at each request's deadline, which
makes the blocked `recv` return, and the read then ends in `RequestTimeout` (408). A body
left unread when its response has been sent (refused before it was read, or cut off) is
dropped the same way, so the server neither waits for the rest nor drains it.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

from flask import Request, current_app
from werkzeug.exceptions import RequestTimeout
from werkzeug.utils import cached_property
from werkzeug.wsgi import ClosingIterator

from visionq.ops import metrics
from visionq.storage.spool import Spool

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


#: Where `body_deadline` leaves the request's `BodyInput` for the application.
BODY_KEY = "visionq.body"


class _Cutoffs:
    """Calls each registered function at its deadline, from one thread per process:
    a thousand uploads in flight cost a heap of a thousand entries, not a thousand timers.
    The heap holds weak references: a body that settled behind a slower one is not kept
    alive (with its request's buffers and socket) until that one's deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.ref[BodyInput]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, body: BodyInput) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), weakref.ref(body)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vq-body-cutoff")
                self._thread.daemon = True
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, ref = self._heap[0]
                body = ref()
                wait = deadline - time.monotonic()
                if wait > 0 and body is not None and not body.settled:
                    del body
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if body is not None and not body.settled:
                body.cut_off()
            del body


_CUTOFFS = _Cutoffs()


class BodyInput:
    """The WSGI input, readable until the request's deadline.

    `received` says when the whole body has been read, and `when_received` runs a
    function then (the tenant's upload slot is given back as soon as its body is in,
    not when the request ends).
    """

    def __init__(self, environ: WSGIEnvironment, timeout: float) -> None:
        self._stream = environ["wsgi.input"]
        self._sock: socket.socket | None = environ.get("gunicorn.socket")
        self._timeout = timeout
        length = environ.get("CONTENT_LENGTH", "")
        self._left = int(length) if length.isdigit() else None
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        self.received = self._left == 0 or (self._left is None and not chunked)
        self.expired = False
        self._done: list[Callable[[], None]] = []
        self._ended = False
        if not self.received:
            _CUTOFFS.add(time.monotonic() + timeout, self)

    @property
    def settled(self) -> bool:
        """Nothing left to cut off: the body is in, or the request is over."""
        return self.received or self._ended

    def when_received(self, function: Callable[[], None]) -> None:
        if self.received:
            function()
        else:
            self._done.append(function)

    def read(self, size: int | None = -1) -> bytes:
        return self._timed(self._stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._timed(self._stream.readline, size)

    def _timed(self, read: Callable[[int | None], bytes], size: int | None) -> bytes:
        if self.expired:
            self._refuse()
        try:
            data = read(size)
        except OSError:
            if self.expired:
                self._refuse()
            raise
        if self.expired:
            self._refuse()
        if self._left is not None:
            self._left -= len(data)
        if (self._left is not None and self._left <= 0) or (not data and size != 0):
            self._receive()
        return data

    def _receive(self) -> None:
        self.received = True
        done, self._done = self._done, []
        for function in done:
            function()

    def _refuse(self) -> None:
        raise RequestTimeout(f"the request body did not arrive within {self._timeout:g} s")

    def cut_off(self) -> None:
        """At the deadline (from the cut-off thread): make a blocked read return."""
        self.expired = True
        metrics.UPLOADS_REFUSED.labels("read_timeout").inc()
        self._drop()

    def end(self) -> None:
        """The response has been sent: whatever of the body was not read is not wanted."""
        self._ended = True
        if not self.received:
            self._drop()

    def _drop(self) -> None:
        # The read side only: the response goes out (or has gone) as usual, and the
        # server's next read of this connection ends at once instead of waiting.
        if self._sock is not None:
            with contextlib.suppress(OSError):  # the client has gone already
                self._sock.shutdown(socket.SHUT_RD)


def body_deadline(wsgi_app: WSGIApplication, timeout: float) -> WSGIApplication:
    """Middleware: the body within `timeout` seconds of the request's start, and no
    unread rest of it waited for once the response is sent."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = BodyInput(environ, timeout)
        environ["wsgi.input"] = environ[BODY_KEY] = body

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not body.received:
                _close_after(start_response)
            return start_response(status, headers, exc_info)

        return ClosingIterator(wsgi_app(environ, start), body.end)

    return app


def _close_after(start_response: StartResponse) -> None:
    """Answer `Connection: close`: with the rest of the body unread, where the next
    request would start is unknown. gunicorn has no WSGI way to say so; its response
    object (whose method `start_response` is) has `force_close`. Other servers: nothing."""
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if callable(force_close):
        force_close()


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
        settings = services.settings
        # A batch file may be as large as a whole request; its purpose's own cap is held
        # once the form (which may come after the file) has been read.
        cap = settings.max_request_bytes if self.path == "/v1/files" else settings.max_image_bytes
        spool: Spool = services.store.spool(max_bytes=cap)
        # Closed at the request's end even when parsing fails before Werkzeug lists it.
        self._spools.append(spool)
        return spool

    def close(self) -> None:
        super().close()
        for spool in self._spools:
            spool.close()
