"""The file record in Redis (OpenAI's Files API): a file's hash and its tenant's index.

A file's bytes are in the image store: a `batch` or `batch_output` file is a body named by
the file's id, a `vision` file is a stored image (content-addressed, shared with any job
that sent the same bytes) that the file holds as a job holds its images (`blobs`). Every
file is in the expiry index with its hash's TTL, so the sweeper removes its bytes when
the record expires (`retention.remove_expired`), as it does a job's.

This module owns the file hashes and the tenants' file indexes; `files/create` also
writes the expiry index and the image references (`blobs`' keys), and
`Blobs.delete_file` deletes a file's hash and index entry with its references.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Required, TypedDict, cast

import redis

from visionq.errors import NotFound
from visionq.state import keys
from visionq.state.blobs import Blobs
from visionq.state.pages import index_page
from visionq.state.redis import NO_REPLICAS, Replicas, redis_errors, script

FilePurpose = Literal["batch", "batch_output", "vision"]


class FileFields(TypedDict, total=False):
    purpose: Required[FilePurpose]
    filename: Required[str]
    bytes: Required[int]
    created_at: Required[int]
    expires_at: Required[int]
    #: A vision file's image as measured from its header.
    sha256: str
    format: str
    width: int
    height: int
    image_tokens: int


_INTS = ("bytes", "created_at", "expires_at", "width", "height", "image_tokens")


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    fields: FileFields

    @property
    def purpose(self) -> FilePurpose:
        return self.fields["purpose"]

    @property
    def bytes(self) -> int:
        return self.fields["bytes"]


def new_file_id() -> str:
    """Time-sorted like job ids, so a tenant's files page newest first by id."""
    return f"file-{time.time_ns() // 1000:014x}{secrets.token_hex(8)}"


class FileStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: int,
        clock: Callable[[], float] = time.time,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        self._redis = client
        self._replicas = replicas
        self._ttl = ttl
        self._clock = clock
        self._create = script(client, "files/create")
        self._blobs = Blobs(client)

    def create(self, file_id: str, *, tenant: str, fields: FileFields) -> FileRecord:
        """Write the record of a file whose bytes are stored (under `file_id`)."""
        now = self._clock()
        fields = {**fields, "created_at": int(now), "expires_at": int(now + self._ttl)}
        sha = fields.get("sha256", "")
        mapping = ["tenant", tenant]
        for name, value in fields.items():
            mapping += [name, str(value)]
        with redis_errors():
            self._create(
                keys=[
                    keys.file(file_id),
                    keys.tenant_files(tenant),
                    keys.EXPIRY,
                    keys.job_blobs(file_id),
                    keys.blob(sha) if sha else keys.file(file_id),
                ],
                args=[file_id, self._ttl, repr(now + self._ttl), sha, *mapping],
            )
        self._replicas.confirm(self._redis)
        return FileRecord(file_id, tenant, fields)

    def load(self, file_id: str) -> FileRecord | None:
        with redis_errors():
            raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.file(file_id)))
        return self._record(file_id, raw)

    @staticmethod
    def _record(file_id: str, raw: dict[bytes, bytes]) -> FileRecord | None:
        if not raw:
            return None
        decoded = {k.decode(): v.decode() for k, v in raw.items()}
        tenant = decoded.pop("tenant")
        fields = {k: int(v) if k in _INTS else v for k, v in decoded.items()}
        return FileRecord(file_id, tenant, cast(FileFields, fields))

    def get(self, file_id: str, *, tenant: str) -> FileRecord:
        """The file if `tenant` owns it; another tenant's is as unknown as a missing one."""
        record = self.load(file_id) if file_id.startswith("file-") else None
        if record is None or record.tenant != tenant:
            raise NotFound(f"no file {file_id!r}", param="file_id")
        return record

    def list_files(
        self, *, tenant: str, purpose: str | None, limit: int, after: str | None, newest_first: bool
    ) -> tuple[list[FileRecord], bool]:
        """A page of the tenant's files after the file `after`, and whether more follow.
        Ids of files that expired are dropped as they are met."""
        return index_page(
            self._redis,
            keys.tenant_files(tenant),
            key=keys.file,
            read=self._record,
            limit=limit,
            after=after,
            newest_first=newest_first,
            keep=lambda record: purpose is None or record.purpose == purpose,
        )

    def delete(self, file_id: str, *, tenant: str) -> list[str]:
        """Remove the file if `tenant` owns it; returns the images nobody uses any more,
        locked for the caller to remove (`Blobs.delete_file`)."""
        self.get(file_id, tenant=tenant)
        return self._blobs.delete_file(file_id, tenant=tenant)
