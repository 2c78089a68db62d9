"""A job as stored, and how its fields are written to and read from the job's hash
(`encode_fields`, `decode_fields`). Pure: no Redis here. The API's job object is built
from a record by `visionq.responses`.

The stored shapes are TypedDicts rather than classes because they are what JSON and the
hash hold, field for field: mypy checks every read and write of a field by name, and no
conversion runs between Redis and the code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Required, TypedDict, cast

from visionq.models import TERMINAL_STATUSES, JobStatus, StoredRequest, StoredResult

Api = Literal["openai", "anthropic"]
ImageSource = Literal["upload", "data_url", "url", "file"]


class ImageRecord(TypedDict, total=False):
    """One image of a job. The intake writes `index`, `source` and either `url` or `blob`
    (the sha256 of the bytes as received); prepare adds what it measured, where `sha256`
    names the bytes sent upstream (a fitted copy when `resized`)."""

    index: Required[int]
    source: Required[ImageSource]
    url: str
    blob: str
    #: A vision file's id (`source: "file"`): its image is `blob`, stored at its upload.
    file_id: str
    format: str
    width: int
    height: int
    bytes: int
    sha256: str
    image_tokens: int
    resized: bool


class WebhookRecord(TypedDict, total=False):
    """A job's webhook delivery state; `generation` orders the outbox's writes and is
    not shown to clients."""

    url: Required[str]
    status: Required[Literal["pending", "delivered", "failed", "disabled"]]
    attempts: int
    last_status_code: int | None
    generation: int


class JobFields(TypedDict, total=False):
    """The job hash's fields besides `status` and `tenant`, as `decode_fields` reads them.

    The lease fields (`lease_until`, `received_until`, `prepare_attempts`) are written and
    read only by the lease scripts; they arrive here as the text Redis holds.
    """

    model: Required[str]
    api: Required[Api]
    created_at: Required[float]
    images: Required[list[ImageRecord]]
    started_at: float
    completed_at: float
    #: The request as submitted, or absent with `request_body` set: it is in the store.
    request: StoredRequest
    request_body: int
    result: StoredResult
    error: dict[str, Any]
    webhook: WebhookRecord | None
    metadata: dict[str, str]
    request_id: str | None
    attempts: int
    #: The upstream account that answered the job's last call.
    account: str
    #: Dollars, from `VISIONQ_PRICES` at the finish (absent without a price).
    cost: float
    #: Unix seconds: still waiting for a worker or the budget then, it is canceled.
    deadline: float
    input_tokens: int
    prepared: int
    lease_until: str
    received_until: str
    prepare_attempts: str
    #: A batch line's job: its batch, the line's `custom_id` and its 1-based line number.
    batch_id: str
    custom_id: str
    line: int
    #: "batch" for a batch line that waits behind interactive jobs (pacing's lanes).
    lane: str


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: the public fields plus what only workers need (`request`, `tenant`)."""

    id: str
    tenant: str
    status: JobStatus
    fields: JobFields

    @property
    def model(self) -> str:
        return self.fields["model"]

    @property
    def api(self) -> Api:
        return self.fields["api"]

    @property
    def request(self) -> StoredRequest:
        return self.fields["request"]

    @property
    def request_in_store(self) -> bool:
        """The request is kept in the image store (`jobs.request_body_name`), not here."""
        return "request" not in self.fields

    def with_request(self, request: StoredRequest) -> JobRecord:
        return JobRecord(self.id, self.tenant, self.status, {**self.fields, "request": request})

    @property
    def images(self) -> list[ImageRecord]:
        return self.fields["images"]

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def encode_fields(fields: JobFields | dict[str, Any]) -> dict[str, str]:
    """The hash's values: JSON for the structured fields, text for the rest (None: left out)."""
    out = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif value is not None:
            out[name] = str(value)
    return out


def decode_fields(raw: dict[str, str]) -> JobFields:
    """The fields of a hash as `encode_fields` wrote them."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON_FIELDS:
            out[name] = json.loads(value)
        elif name in ("created_at", "started_at", "completed_at", "cost", "deadline"):
            out[name] = float(value)
        elif name in ("attempts", "input_tokens", "request_body", "prepared", "line"):
            out[name] = int(value)
        else:
            out[name] = value
    return cast(JobFields, out)


#: Fields kept as JSON in the hash.
_JSON_FIELDS = ("images", "request", "result", "error", "webhook", "metadata")


def record_from_hash(job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
    """A job's record from its hash as Redis returns it (None: no such job)."""
    if not raw:
        return None
    decoded = {k.decode(): v.decode() for k, v in raw.items()}
    status = cast(JobStatus, decoded.pop("status"))
    tenant = decoded.pop("tenant")
    return JobRecord(job_id, tenant, status, decode_fields(decoded))
