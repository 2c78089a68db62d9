"""Where images and prepared upstream bodies live, behind one `ImageStore` protocol.

Images are content-addressed by sha256: two jobs with the same picture share one copy, and
a worker re-reading an image can trust it is the one the client sent. Prepared request
bodies (the JSON with data URLs the upstream stage streams out) are named by job id.
Backends are chosen by URL: `file://` here; S3 later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from visionq.errors import ConfigurationError, PayloadTooLarge, Unavailable

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    size: int


@contextmanager
def _storage_errors() -> Iterator[None]:
    """A full or unwritable disk is an outage (503), not a bug in the request (500)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise Unavailable(f"image storage failed: {exc.strerror or exc}", retry_after=5) from None


class ImageStore(Protocol):
    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        """Store streamed bytes, hashing while writing; over `max_bytes` stores nothing."""

    def open_image(self, sha256: str) -> BinaryIO: ...

    def has_image(self, sha256: str) -> bool: ...

    def delete_image(self, sha256: str) -> None: ...

    def write_body(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """Let `write` fill a file that appears under `name` only once it is complete."""

    def open_body(self, name: str) -> tuple[BinaryIO, int]: ...

    def delete_body(self, name: str) -> None: ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be used."""


def read_chunks(fp: BinaryIO, size: int = _CHUNK) -> Iterable[bytes]:
    while block := fp.read(size):
        yield block


class FileStore:
    """Content-addressed files under one root: `images/ab/<sha256>`, `bodies/<name>`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._images = self.root / "images"
        self._bodies = self.root / "bodies"
        self._tmp = self.root / "tmp"

    def _ensure(self) -> None:
        for folder in (self._images, self._bodies, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def _image_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self._images / sha256[:2] / sha256

    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        with _storage_errors():
            self._ensure()
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        digest = hashlib.sha256()
        size = 0
        try:
            with _storage_errors():
                with os.fdopen(fd, "wb") as out:
                    for block in chunks:
                        size += len(block)
                        if size > max_bytes:
                            raise PayloadTooLarge(f"an image is over the {max_bytes}-byte limit")
                        digest.update(block)
                        out.write(block)
                # Renamed only once closed (flushed): a reader of the same sha, stored by
                # an earlier job, must never see a file that is still being written.
                sha = digest.hexdigest()
                final = self._image_path(sha)
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredImage(sha, size)

    def open_image(self, sha256: str) -> BinaryIO:
        return self._image_path(sha256).open("rb")

    def has_image(self, sha256: str) -> bool:
        return self._image_path(sha256).exists()

    def delete_image(self, sha256: str) -> None:
        self._image_path(sha256).unlink(missing_ok=True)

    def _body_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError("bad body name")
        return self._bodies / name

    def write_body(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        final = self._body_path(name)
        with _storage_errors():
            self._ensure()
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def open_body(self, name: str) -> tuple[BinaryIO, int]:
        path = self._body_path(name)
        fp = path.open("rb")
        return fp, os.fstat(fp.fileno()).st_size

    def delete_body(self, name: str) -> None:
        self._body_path(name).unlink(missing_ok=True)

    def ping(self) -> None:
        with _storage_errors():
            self._ensure()
            tempfile.NamedTemporaryFile(dir=self._tmp).close()


def open_store(url: str) -> ImageStore:
    """The backend named by `VISIONQ_STORAGE_URL`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # file://./var/images is relative to the working directory; file:///srv/x is absolute.
        return FileStore(Path(parsed.netloc + parsed.path))
    raise ConfigurationError(f"unsupported storage URL scheme {parsed.scheme!r}")
