"""The S3 backend: content-addressed objects in one bucket, for API and workers on many hosts.

`<prefix>/images/ab/<sha256>`, `<prefix>/bodies/<name>`: the same layout as the file
backend. The endpoint and credentials come from the standard AWS variables, which boto3
reads itself.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import IO, Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from visionq.errors import Unavailable
from visionq.storage.spool import CHUNK_BYTES, Spool, SpoolingStore, StoredImage, storage_errors

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


class _Streamed(io.RawIOBase):
    """An S3 object's body as a raw stream, for `io.BufferedReader` (which gives lines).
    A connection lost or timed out in the middle is an outage (`Unavailable`), as it would
    have been at the GET, not a half-read file."""

    def __init__(self, body: Any, errors: Callable[[str], AbstractContextManager[None]]) -> None:
        self._body = body
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._errors("read an object"):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Store(SpoolingStore):
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
        return self._key(*self.image_name(sha256))

    def _body_key(self, name: str) -> str:
        return self._key(*self.body_name(name))

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
            with storage_errors():
                local = on_error.enter_context(tempfile.TemporaryFile())
            # One GET, copied as it arrives (a transfer manager would open ranged GETs in
            # threads of its own, taking connections the other threads need).
            with self._s3_errors("read an object"):
                body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
                with storage_errors():
                    for block in body.iter_chunks(CHUNK_BYTES):
                        local.write(block)
            size = local.tell()
            local.seek(0)
            on_error.pop_all()  # complete: the caller closes it from here on
        return cast(BinaryIO, local), size

    def spool(self, *, max_bytes: int) -> Spool:
        with storage_errors():
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
        with storage_errors(), tempfile.TemporaryFile() as spool:
            write(cast(BinaryIO, spool))
            self._upload(spool, key, spool.seek(0, os.SEEK_END))

    def open_body(self, name: str) -> tuple[BinaryIO, int]:
        return self._download(self._body_key(name))

    def open_body_at(self, name: str, offset: int) -> BinaryIO:
        """One ranged GET, read as it arrives: a window of a 200 MB input costs what it
        reads, not the rest of the file."""
        with self._s3_errors("read an object"):
            answer = self._s3.get_object(
                Bucket=self.bucket, Key=self._body_key(name), Range=f"bytes={offset}-"
            )
        streamed = _Streamed(answer["Body"], self._s3_errors)
        return cast(BinaryIO, io.BufferedReader(streamed, CHUNK_BYTES))

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
