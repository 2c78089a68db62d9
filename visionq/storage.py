"""Where images and prepared upstream bodies live, behind one `ImageStore` protocol.

Images are content-addressed by sha256: two jobs with the same picture share one copy, and
a worker re-reading an image can trust it is the one the client sent. Prepared request
bodies (the JSON with data URLs the upstream stage streams out) are named by job id.
Backends are chosen by URL: `file://<root>` (one host, or a shared volume) and
`s3://<bucket>/<prefix>` (API and workers on many hosts; endpoint and credentials come from
the standard AWS variables, which boto3 reads itself).
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from visionq.errors import ConfigurationError, PayloadTooLarge, Unavailable

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    size: int


def _outage(exc: OSError) -> Unavailable:
    """A full or unwritable disk is an outage (503), not a bug in the request (500)."""
    return Unavailable(f"image storage failed: {exc.strerror or exc}", retry_after=5)


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Around our own storage's calls only: an `OSError` raised in the block is taken for
    the store's, so no caller's code (a source being read, a callback) may run in it. A
    missing file stays `FileNotFoundError`, which callers take as "not stored"."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _outage(exc) from None


class Spool:
    """An image being received, written once into the store's own temporary space and hashed
    on the way, so that storing it (`put_spool`) is a rename, or nothing when the same bytes
    are stored already, rather than a second copy. Readable and seekable like the file it
    wraps (the intake probes its header from it). Over `max_bytes`, a write refuses with
    `PayloadTooLarge` and drops what was written, so an oversized upload stops piling up
    at once. Closing it removes the temporary file unless the store took it."""

    def __init__(self, fp: IO[bytes], path: Path | None, *, max_bytes: int) -> None:
        self.file = fp
        self.path = path
        self._max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._max_bytes:
            self.close()
            raise PayloadTooLarge(f"an image is over the {self._max_bytes}-byte limit")
        self._digest.update(data)
        try:  # per write, not around the loop feeding us: only this write is our storage
            return self.file.write(data)
        except OSError as exc:
            raise _outage(exc) from None

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def __getattr__(self, name: str) -> Any:
        # read, readinto, seek, tell, readable...: the file's own.
        return getattr(self.file, name)


class ImageStore(Protocol):
    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        """Store streamed bytes, hashing while writing; over `max_bytes` stores nothing."""

    def spool(self, *, max_bytes: int) -> Spool:
        """A file to receive one image into, for `put_spool`."""

    def put_spool(self, spool: Spool) -> StoredImage:
        """Store a completely received spool, without copying it where the backend can."""

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

    def delete_body(self, name: str) -> None: ...

    def ping(self) -> None:
        """Raise `Unavailable` when the backend cannot be used."""


def read_chunks(fp: BinaryIO, size: int = _CHUNK) -> Iterable[bytes]:
    while block := fp.read(size):
        yield block


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


def _check_body_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError("bad body name")
    return name


def _put_chunks(store: ImageStore, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
    """`put_image` on every backend: the bytes go through a spool, hashed and capped on
    the way, then are stored as a received upload is (`put_spool`).

    Iterating `chunks` runs the caller's source (a URL being fetched, a file being read):
    what it raises is the source's failure and comes out as it is, never as a storage
    outage; only the spool's own writes are ours (`Spool.write`)."""
    spool = store.spool(max_bytes=max_bytes)
    try:
        for block in chunks:
            spool.write(block)
        return store.put_spool(spool)
    finally:
        spool.close()


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

    def _temporary(self) -> tuple[int, str]:
        """A new file in the temporary folder, which is made only when missing rather than
        checked each time (three mkdir calls per upload, 3% of its time under wrk)."""
        try:
            return tempfile.mkstemp(dir=self._tmp)
        except FileNotFoundError:
            self._ensure()
            return tempfile.mkstemp(dir=self._tmp)

    def _image_path(self, sha256: str) -> Path:
        return self._images / sha256[:2] / _check_sha(sha256)

    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        return _put_chunks(self, chunks, max_bytes=max_bytes)

    def spool(self, *, max_bytes: int) -> Spool:
        with _storage_errors():
            fd, tmp_name = self._temporary()
        return Spool(os.fdopen(fd, "w+b"), Path(tmp_name), max_bytes=max_bytes)

    def put_spool(self, spool: Spool) -> StoredImage:
        stored = StoredImage(spool.sha256, spool.size)
        final = self._image_path(stored.sha256)
        # Same bytes, same name: a file already there is this image, complete (one stat);
        # the spool's own file goes when it is closed.
        if final.exists():
            return stored
        if spool.path is None:
            # This spool was stored already and that file has gone since (a concurrent
            # delete, with the same upload named twice in one request): the open file
            # still holds the bytes, so copy them.
            with _storage_errors():  # the source is our own spool: its errors are ours
                spool.seek(0)
                return self.put_image(read_chunks(cast(BinaryIO, spool.file)), max_bytes=spool.size)
        with _storage_errors():
            # Flushed before the rename: a reader of the same sha, stored by an earlier
            # job, must never see a file that is still being written.
            spool.flush()
            try:
                os.replace(spool.path, final)
            except FileNotFoundError:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(spool.path, final)
        spool.path = None
        return stored

    def open_image(self, sha256: str) -> BinaryIO:
        return self._image_path(sha256).open("rb")

    def has_image(self, sha256: str) -> bool:
        return self._image_path(sha256).exists()

    def delete_image(self, sha256: str) -> None:
        self._image_path(sha256).unlink(missing_ok=True)

    def _body_path(self, name: str) -> Path:
        return self._bodies / _check_body_name(name)

    def write_body(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        final = self._body_path(name)
        with _storage_errors():
            self._ensure()
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with _storage_errors(), os.fdopen(fd, "wb") as out:
                write(out)
            with _storage_errors():
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


#: Keep-alive connections per S3 client: one per thread of the largest pool that shares it
#: (an upstream worker runs 64 threads), so no thread waits for a connection.
S3_MAX_POOL_CONNECTIONS = 64
#: Objects of 50 MB take their time, and a throttled request is worth another try.
_S3_CONFIG = Config(
    max_pool_connections=S3_MAX_POOL_CONNECTIONS,
    connect_timeout=5,
    read_timeout=60,
    retries={"mode": "standard", "max_attempts": 3},
)
#: `ping` only asks whether S3 answers at all, for the readiness probe and before each job
#: is prepared: an S3 that accepts connections and never answers must be an outage within
#: seconds, not after four 60 s reads (measured: 240 s, a prepare process held on each try).
_S3_PING_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 1}
)
_S3_MISSING = {"404", "NoSuchKey", "NotFound"}
_S3_NO_BUCKET = {"NoSuchBucket"}


class S3Store:
    """Content-addressed objects in one bucket: `<prefix>/images/ab/<sha256>`,
    `<prefix>/bodies/<name>`, the same layout as `FileStore`.

    Every object is written by one PUT of a complete local file, so a reader never sees a
    partial one and an upload that fails leaves nothing. Reads come back as local temporary
    files: Pillow seeks, and the upstream call needs a length and a body it can send at its
    own pace without holding an S3 connection meanwhile. Local temporary files go where
    `tempfile` puts them (`TMPDIR`).
    """

    def __init__(self, bucket: str, prefix: str = "") -> None:
        self.bucket = bucket
        self._prefix = prefix.strip("/")
        self._client_lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._client_pid = 0

    @property
    def _s3(self) -> Any:
        return self._client("data", _S3_CONFIG)

    def _client(self, name: str, config: Config) -> Any:
        """One client of each kind per process, made on first use: boto3 clients are
        thread-safe (its sessions are not), and one made before a fork must not be shared
        across it."""
        with self._client_lock:
            if self._client_pid != os.getpid():
                self._clients, self._client_pid = {}, os.getpid()
            if name not in self._clients:
                self._clients[name] = boto3.session.Session().client("s3", config=config)
            return self._clients[name]

    def _key(self, *parts: str) -> str:
        return "/".join([self._prefix, *parts] if self._prefix else parts)

    def _image_key(self, sha256: str) -> str:
        return self._key("images", sha256[:2], _check_sha(sha256))

    def _body_key(self, name: str) -> str:
        return self._key("bodies", _check_body_name(name))

    @contextmanager
    def _s3_errors(self, action: str) -> Iterator[None]:
        """S3's errors mapped at the boundary: a missing object is `FileNotFoundError`, as
        for a file; anything else (unreachable, 5xx, throttled, refused) is an outage. Only
        the error's code goes into the message: an S3 error body may quote the access key."""
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            if code in _S3_MISSING:
                raise FileNotFoundError(
                    errno.ENOENT, "no such object in the bucket", self.bucket
                ) from None
            if code in _S3_NO_BUCKET:
                message = f"the S3 bucket {self.bucket!r} does not exist"
            else:
                message = f"image storage (S3) refused to {action}: {code}"
            raise Unavailable(message, retry_after=5) from None
        except BotoCoreError as exc:
            raise Unavailable(
                f"image storage (S3) failed to {action}: {type(exc).__name__}", retry_after=5
            ) from None

    def _exists(self, key: str) -> bool:
        try:
            with self._s3_errors("look up an object"):
                self._s3.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def _upload(self, fp: IO[bytes], key: str, size: int) -> None:
        fp.seek(0)
        with self._s3_errors("store an object"):
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=fp, ContentLength=size)

    def _download(self, key: str) -> tuple[BinaryIO, int]:
        with ExitStack() as on_error:
            with _storage_errors():
                local = on_error.enter_context(tempfile.TemporaryFile())
            # One GET, copied as it arrives (a transfer manager would open ranged GETs in
            # threads of its own, taking connections the other threads need).
            with self._s3_errors("read an object"):
                body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
                with _storage_errors():
                    for block in body.iter_chunks(_CHUNK):
                        local.write(block)
            size = local.tell()
            local.seek(0)
            on_error.pop_all()  # complete: the caller closes it from here on
        return cast(BinaryIO, local), size

    def put_image(self, chunks: Iterable[bytes], *, max_bytes: int) -> StoredImage:
        return _put_chunks(self, chunks, max_bytes=max_bytes)

    def spool(self, *, max_bytes: int) -> Spool:
        with _storage_errors():
            return Spool(tempfile.TemporaryFile(), None, max_bytes=max_bytes)

    def put_spool(self, spool: Spool) -> StoredImage:
        stored = StoredImage(spool.sha256, spool.size)
        key = self._image_key(stored.sha256)
        # Same bytes, same key: an object already there is this image, complete.
        if not self._exists(key):
            self._upload(spool.file, key, stored.size)
        return stored

    def open_image(self, sha256: str) -> BinaryIO:
        return self._download(self._image_key(sha256))[0]

    def has_image(self, sha256: str) -> bool:
        return self._exists(self._image_key(sha256))

    def delete_image(self, sha256: str) -> None:
        with self._s3_errors("delete an image"):
            self._s3.delete_object(Bucket=self.bucket, Key=self._image_key(sha256))

    def write_body(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        key = self._body_key(name)
        with _storage_errors(), tempfile.TemporaryFile() as spool:
            write(cast(BinaryIO, spool))
            self._upload(spool, key, spool.seek(0, os.SEEK_END))

    def open_body(self, name: str) -> tuple[BinaryIO, int]:
        return self._download(self._body_key(name))

    def delete_body(self, name: str) -> None:
        with self._s3_errors("delete a body"):
            self._s3.delete_object(Bucket=self.bucket, Key=self._body_key(name))

    def ping(self) -> None:
        try:
            with self._s3_errors(f"reach the bucket {self.bucket!r}"):
                self._client("ping", _S3_PING_CONFIG).head_bucket(Bucket=self.bucket)
        except FileNotFoundError:  # HEAD has no body, so a missing bucket is a bare 404
            raise Unavailable(
                f"the S3 bucket {self.bucket!r} does not exist", retry_after=5
            ) from None


def open_store(url: str) -> ImageStore:
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
