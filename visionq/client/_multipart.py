"""A multipart/form-data body read from its file while it is sent.

`requests` builds a `files=` upload whole in memory; a batch input may be 200 MB. This body
has a length (so the upload carries Content-Length, not chunked encoding) and is read in
blocks by the HTTP connection, so the client holds one block at a time.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import IO

BLOCK = 64 * 1024


def _quoted(value: str) -> str:
    """A header parameter value: quotes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartBody:
    """Form `fields`, then one file part `name` of `size` bytes from `stream`.

    `on_read(sent)` is called with the file bytes sent so far, for a progress display.
    """

    def __init__(
        self,
        fields: Mapping[str, str],
        name: str,
        filename: str,
        stream: IO[bytes],
        size: int,
        content_type: str = "application/octet-stream",
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        boundary = f"visionq-{secrets.token_hex(16)}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(key)}"\r\n\r\n'
            f"{value}\r\n".encode()
            for key, value in fields.items()
        )
        head += (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{_quoted(name)}"; filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._length = len(head) + size + len(tail)
        self._parts: list[IO[bytes]] = [io.BytesIO(head), stream, io.BytesIO(tail)]
        self._file = stream
        self._size = size
        self._sent = 0
        self._on_read = on_read

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(BLOCK):
            yield block

    def read(self, size: int = -1) -> bytes:
        want = BLOCK if size is None or size < 0 else size
        while self._parts:
            part = self._parts[0]
            block = part.read(want)
            if part is self._file:
                block = block[: self._size - self._sent]  # never more than announced
                self._sent += len(block)
                if block and self._on_read is not None:
                    self._on_read(self._sent)
                if not block and self._sent < self._size:
                    raise OSError(f"the file ended after {self._sent} of {self._size} bytes")
            if block:
                return block
            self._parts.pop(0)
        return b""
