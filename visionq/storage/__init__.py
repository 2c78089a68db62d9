"""Where images and prepared upstream bodies live, behind one `BlobStore` protocol.

Images are content-addressed by sha256: two jobs with the same picture share one copy, and
a worker re-reading an image can trust it is the one the client sent. Prepared request
bodies (the JSON with data URLs the upstream stage streams out) are named by job id.
Backends are chosen by URL: `file://<root>` (`file.FileStore`: one host, or a shared
volume) and `s3://<bucket>/<prefix>` (`s3.S3Store`: API and workers on many hosts). What
the two share, receiving bytes into a spool and the layout of names, is `spool`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, BinaryIO, Protocol
from urllib.parse import urlparse

from visionq.errors import ConfigurationError
from visionq.storage.file import FileStore
from visionq.storage.s3 import S3Store
from visionq.storage.spool import Spool, StoredImage


class BlobStore(Protocol):
    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        """Store streamed bytes, hashing while writing; over `max_bytes` stores nothing."""

    def spool(self, *, max_bytes: int) -> Spool:
        """A file to receive one image into, for `put_spool`."""

    def put_spool(self, spool: Spool) -> StoredImage:
        """Store a completely received spool, without copying it where the backend can."""

    def put_upload(self, upload: IO[bytes], *, max_bytes: int) -> StoredImage:
        """Store a received upload: by `put_spool` when it is one of this store's spools,
        else by copying it from its start."""

    def open_image(self, sha256: str) -> BinaryIO:
        """The image as a seekable file (Pillow seeks); `FileNotFoundError` when missing."""

    def has_image(self, sha256: str) -> bool: ...

    def delete_image(self, sha256: str) -> None: ...

    def write_body(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """Let `write` fill a file that appears under `name` only once it is complete.

        `write` works on our own storage only (it reads stored images into the file), so
        an `OSError` it raises is the store's: a full disk is `Unavailable`."""

    def open_body(self, name: str) -> tuple[BinaryIO, int]:
        """The body and its length; `FileNotFoundError` when missing."""

    def open_body_at(self, name: str, offset: int) -> BinaryIO:
        """The body from byte `offset` on, read as it streams (not copied first), so a
        batch input is read a window of lines at a time; `FileNotFoundError` when missing."""

    def delete_body(self, name: str) -> None: ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be used."""


def open_store(url: str) -> BlobStore:
    """The backend named by `VISIONQ_STORAGE_URL`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # file://./var/images is relative to the working directory; file:///srv/x is absolute.
        return FileStore(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigurationError("an s3:// storage URL needs a bucket: s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path)
    raise ConfigurationError(f"unsupported storage URL scheme {parsed.scheme!r}")
