"""What every storage backend shares: the spool an image is received into, the layout of
names, and storing streamed bytes through a spool.

A spool is written once, into the store's own temporary space, and hashed on the way, so
that storing it is a rename (file backend) or one PUT (S3), or nothing when the same
bytes are stored already, rather than a second copy.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from visionq.errors import PayloadTooLarge, Unavailable

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    size: int


def outage(exc: OSError) -> Unavailable:
    """A full or unwritable disk is an outage (503), not a bug in the request (500)."""
    return Unavailable(f"image storage failed: {exc.strerror or exc}", retry_after=5)


@contextmanager
def storage_errors() -> Iterator[None]:
    """Around our own storage's calls only: an `OSError` raised in the block is taken for
    the store's, so no caller's code (a source being read, a callback) may run in it. A
    missing file stays `FileNotFoundError`, which callers take as "not stored"."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise outage(exc) from None


class Spool(io.BufferedIOBase, BinaryIO):
    """An image being received: a binary file in the store's temporary space, hashed as it
    is written.

    It reads and seeks like the file it wraps (the intake probes its header from it, and
    Werkzeug writes a multipart file part into it). Over `max_bytes`, a write refuses with
    `PayloadTooLarge` and drops what was written, so an oversized upload stops piling up
    at once. Closing it removes the temporary file unless the store took it (`path` is
    then None). It cannot be truncated: its hash covers every byte written.
    """

    def __init__(self, fp: IO[bytes], path: Path | None, *, max_bytes: int) -> None:
        super().__init__()
        self.file = fp
        self.path = path
        self._max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: ReadableBuffer, /) -> int:
        block = memoryview(data)
        self.size += block.nbytes
        if self.size > self._max_bytes:
            self.close()
            raise PayloadTooLarge(f"an image is over the {self._max_bytes}-byte limit")
        self._digest.update(block)
        try:  # per write, not around the loop feeding us: only this write is our storage
            return self.file.write(block)
        except OSError as exc:
            raise outage(exc) from None

    def read(self, size: int | None = -1, /) -> bytes:
        return self.file.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            super().close()  # flushes, and marks this stream closed
        finally:
            self.file.close()
            if self.path is not None:
                self.path.unlink(missing_ok=True)
                self.path = None

    def __enter__(self) -> Spool:
        return self


def read_chunks(fp: IO[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    while block := fp.read(size):
        yield block


def sha256_of(upload: IO[bytes]) -> str:
    """The sha256 of an upload's bytes: a spool's own, taken while it was received, or else
    read through the file, which is left at its start."""
    if isinstance(upload, Spool):
        return upload.sha256
    upload.seek(0)
    digest = hashlib.sha256()
    for block in read_chunks(upload):
        digest.update(block)
    upload.seek(0)
    return digest.hexdigest()


def _checked_sha(sha256: str) -> str:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


def _checked_body_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError("bad body name")
    return name


class SpoolingStore(ABC):
    """The half of a store that is the same on every backend: the layout of names
    (`images/ab/<sha256>`, `bodies/<name>`) and storing bytes by way of a spool."""

    @staticmethod
    def image_name(sha256: str) -> tuple[str, str, str]:
        return "images", sha256[:2], _checked_sha(sha256)

    @staticmethod
    def body_name(name: str) -> tuple[str, str]:
        return "bodies", _checked_body_name(name)

    @abstractmethod
    def spool(self, *, max_bytes: int) -> Spool: ...

    @abstractmethod
    def put_spool(self, spool: Spool) -> StoredImage: ...

    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        """The bytes go through a spool, hashed and capped on the way, then are stored as a
        received upload is (`put_spool`).

        Iterating `chunks` runs the caller's source (a URL being fetched, a file being
        read): what it raises is the source's failure and comes out as it is, never as a
        storage outage; only the spool's own writes are ours (`Spool.write`)."""
        spool = self.spool(max_bytes=max_bytes)
        try:
            for block in chunks:
                spool.write(block)
            return self.put_spool(spool)
        finally:
            spool.close()

    def put_upload(self, upload: IO[bytes], *, max_bytes: int) -> StoredImage:
        """A received upload: one of our own spools is stored as it is, without a copy;
        any other file is read from its start and stored as a copy."""
        if isinstance(upload, Spool):
            return self.put_spool(upload)
        upload.seek(0)
        return self.put_image(read_chunks(upload), max_bytes=max_bytes)
