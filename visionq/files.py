"""Files (OpenAI's Files API): batch inputs, batch results and vision images, stored once
and read back streamed.

A `batch` file is a JSONL input of at most `max_request_bytes` (200 MB); a `vision` file
is one image of at most `max_image_bytes`, its format and size read from its header at
upload (415 and 422 as for a job's upload), usable wherever an image URL is as
`"url": "file-<id>"` without being copied again; a `batch_output` file is what a batch
wrote (clients cannot upload one). Removal is `retention`'s, as for jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, BinaryIO, cast

from visionq.errors import InvalidRequest, PayloadTooLarge, VisionqError
from visionq.media import images
from visionq.settings import Settings
from visionq.state.files import FilePurpose, FileRecord, FileStore, new_file_id
from visionq.storage import BlobStore
from visionq.storage.spool import read_chunks

#: What clients may upload (`batch_output` is written by batches only).
UPLOAD_PURPOSES = ("batch", "vision")
#: A `file-` id stands for a vision file wherever an image URL may be.
FILE_ID_PREFIX = "file-"


class Files:
    def __init__(self, settings: Settings, store: BlobStore, records: FileStore) -> None:
        self._settings = settings
        self._store = store
        self.records = records

    def create(self, upload: IO[bytes], *, tenant: str, purpose: str, filename: str) -> FileRecord:
        """Store an uploaded file (received whole into a spool, its cap held while it
        arrived) and write its record."""
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", param="purpose"
            )
        size = upload.seek(0, 2)
        upload.seek(0)
        filename = (filename or "upload")[-255:]
        if purpose == "vision":
            return self._create_image(upload, size, tenant=tenant, filename=filename)
        if size > self._settings.max_request_bytes:
            raise PayloadTooLarge(
                f"a batch file is at most {self._settings.max_request_bytes} bytes", param="file"
            )
        return self._write(new_file_id(), tenant, "batch", filename, lambda out: _copy(upload, out))

    def _create_image(
        self, upload: IO[bytes], size: int, *, tenant: str, filename: str
    ) -> FileRecord:
        limit = self._settings.max_image_bytes
        if size > limit:
            raise PayloadTooLarge(f"an image file is at most {limit} bytes", param="file")
        try:
            info = images.probe(cast(BinaryIO, upload), max_pixels=self._settings.max_image_pixels)
        except VisionqError as exc:
            exc.param = "file"
            raise
        upload.seek(0)
        stored = self._store.put_upload(upload, max_bytes=limit)
        record = self.records.create(
            new_file_id(),
            tenant=tenant,
            fields={
                "purpose": "vision",
                "filename": filename,
                "bytes": size,
                "created_at": 0,
                "expires_at": 0,
                "sha256": stored.sha256,
                "format": info.format,
                "width": info.width,
                "height": info.height,
                "image_tokens": info.tokens,
            },
        )
        if not self._store.has_image(stored.sha256):
            # Another holder's removal took the bytes between our store and our record
            # (which now keeps them): store them again.
            upload.seek(0)
            self._store.put_upload(upload, max_bytes=limit)
        return record

    def _write(
        self,
        file_id: str,
        tenant: str,
        purpose: FilePurpose,
        filename: str,
        write: Callable[[BinaryIO], object],
    ) -> FileRecord:
        sized = _Counting(write)
        self._store.write_body(file_id, sized)
        return self.records.create(
            file_id,
            tenant=tenant,
            fields={
                "purpose": purpose,
                "filename": filename,
                "bytes": sized.written,
                "created_at": 0,
                "expires_at": 0,
            },
        )

    def write_output(
        self, file_id: str, *, tenant: str, filename: str, write: Callable[[BinaryIO], object]
    ) -> FileRecord:
        """A batch's result file, streamed by `write` into the store under `file_id`
        (`new_file_id`; written again, the same id replaces the file whole)."""
        return self._write(file_id, tenant, "batch_output", filename, write)

    def write_input(
        self, *, tenant: str, filename: str, write: Callable[[BinaryIO], object]
    ) -> FileRecord:
        """A batch input made by the service (an Anthropic message batch's requests)."""
        return self._write(new_file_id(), tenant, "batch", filename, write)

    def get(self, file_id: str, *, tenant: str) -> FileRecord:
        return self.records.get(file_id, tenant=tenant)

    def open_content(self, file_id: str, *, tenant: str) -> tuple[BinaryIO, int]:
        """The file's bytes as a stream, and their length."""
        record = self.records.get(file_id, tenant=tenant)
        if record.purpose == "vision":
            return self._store.open_image(record.fields["sha256"]), record.bytes
        return self._store.open_body(file_id)

    def open_content_at(self, file_id: str, offset: int, *, tenant: str) -> BinaryIO:
        """A batch file's bytes from `offset` on, streamed (a ranged read on S3)."""
        self.records.get(file_id, tenant=tenant)
        return self._store.open_body_at(file_id, offset)


class _Counting:
    """A `write` that counts the bytes it writes, for the file's record."""

    def __init__(self, write: Callable[[BinaryIO], object]) -> None:
        self._write = write
        self.written = 0

    def __call__(self, out: BinaryIO) -> None:
        start = out.tell()
        self._write(out)
        self.written = out.tell() - start


def _copy(source: IO[bytes], target: BinaryIO) -> None:
    source.seek(0)
    for block in read_chunks(source):
        target.write(block)
