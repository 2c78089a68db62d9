"""The SDK's results: frozen dataclasses of its own, not the server's pydantic models.

Those are strict on purpose (they validate requests), while a client has to keep working
when a newer server adds a field. Unknown fields are ignored here and kept in `.raw`.
The SDK ships without the server, so the constants below repeat the API's; a unit test
compares them, and these classes' field names, with the server's OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: The API's job states (API.md, "The job object"), and those that never change again.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset(JOB_STATUSES[2:])
#: The longest `?wait=` the API holds a request for, and the largest page it serves.
MAX_WAIT_SECONDS = 60.0
MAX_PAGE_SIZE = 100


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of the dataclass `cls`; a newer server's extras
    are left out (and `raw` is ours, never the server's)."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data and f.name != "raw"}


@dataclass(frozen=True)
class JobImage:
    """One image of a job; all but `index` and `source` are None until a worker checked it."""

    index: int
    source: str
    url: str | None = None
    #: A vision file's id, for an image given as `file-...`.
    file_id: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    image_tokens: int | None = None
    resized: bool | None = None


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed (API.md, "Errors"); `upstream_status` where MiMo answered.

    Not named `JobError`: that is the server's exception for the same failures, and the
    two are different things (a record received here, an exception raised there)."""

    type: str
    message: str
    param: str | None = None
    upstream_status: int | None = None


@dataclass(frozen=True)
class Result:
    content: str
    reasoning_content: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookState:
    url: str
    status: str
    attempts: int = 0
    last_status_code: int | None = None


@dataclass(frozen=True)
class Job:
    """The API's job object; `raw` is the JSON as received."""

    id: str
    status: str
    model: str
    created_at: float
    api: str = "openai"
    started_at: float | None = None
    completed_at: float | None = None
    images: tuple[JobImage, ...] = ()
    usage_estimate: dict[str, Any] = field(default_factory=dict)
    result: Result | None = None
    error: JobFailure | None = None
    attempts: int = 0
    #: The upstream account that answered, by name.
    account: str | None = None
    #: Dollars, when the service has prices.
    cost: float | None = None
    #: Unix seconds, when it was given one.
    deadline: float | None = None
    webhook: WebhookState | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: A batch line's job: its batch and the line's custom_id.
    batch_id: str | None = None
    custom_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """The job in `data`; KeyError, TypeError or AttributeError when `data` is not
        shaped like one, which the callers turn into their own errors."""
        nested = {
            "images": tuple(JobImage(**_known(JobImage, i)) for i in data.get("images") or ()),
            "result": Result(**_known(Result, data["result"])) if data.get("result") else None,
            "error": JobFailure(**_known(JobFailure, data["error"])) if data.get("error") else None,
            "webhook": (
                WebhookState(**_known(WebhookState, data["webhook"]))
                if data.get("webhook")
                else None
            ),
            "usage_estimate": data.get("usage_estimate") or {},
            "metadata": data.get("metadata") or {},
        }
        return cls(**(_known(cls, data) | nested), raw=dict(data))

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def content(self) -> str | None:
        """The answer's text once the job succeeded, else None."""
        return self.result.content if self.result else None


@dataclass(frozen=True)
class JobPage:
    """One page of `GET /v1/jobs`, newest first; `next` is the cursor of the following page."""

    data: tuple[Job, ...]
    has_more: bool
    next: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPage:
        return cls(tuple(Job.from_dict(j) for j in data["data"]), data["has_more"], data["next"])


@dataclass(frozen=True)
class ImageCount:
    index: int
    format: str
    width: int
    height: int
    image_tokens: int


@dataclass(frozen=True)
class TokenCount:
    """`POST /v1/tokens`: MiMo's image-token count per image and in total."""

    images: tuple[ImageCount, ...]
    image_tokens: int
    #: With the text's estimate.
    input_tokens: int | None = None
    #: Dollars for that input, when the service has prices.
    input_cost: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenCount:
        images = tuple(ImageCount(**_known(ImageCount, i)) for i in data["images"])
        return cls(
            images,
            data["image_tokens"],
            data.get("input_tokens"),
            data.get("input_cost"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook: `id` is the `webhook-id` (the same on every retry: deduplicate
    on it), `timestamp` when the job finished, `job` the job object."""

    id: str
    type: str
    timestamp: int
    job: Job
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


#: OpenAI's batch states (API.md, "Batches"), and those a batch never leaves.
BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
BATCH_TERMINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})
#: What a `POST /v1/files` is for: a JSONL batch input, or one image used as `file-<id>`.
FILE_PURPOSES = ("batch", "vision")


@dataclass(frozen=True)
class FileObject:
    """The API's file object (OpenAI's shape); batch output and error files are files too
    (purpose `batch_output`)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str | None = None
    expires_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileObject:
        if not data["id"]:
            raise KeyError("id")
        return cls(**_known(cls, data), raw=dict(data))


@dataclass(frozen=True)
class FilePage:
    """One page of `GET /v1/files`; the next page starts `after` the last id."""

    data: tuple[FileObject, ...]
    has_more: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilePage:
        return cls(tuple(FileObject.from_dict(f) for f in data["data"]), bool(data["has_more"]))


@dataclass(frozen=True)
class BatchRequestCounts:
    """Lines in all and by outcome; `canceled` is visionq's (lines a cancel stopped)."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0

    @property
    def done(self) -> int:
        """Lines that have an outcome, whichever."""
        return self.completed + self.failed + self.canceled


@dataclass(frozen=True)
class BatchError:
    """Why an input line failed validation (`line` is 1-based), or why the batch did."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class Batch:
    """The API's batch object (OpenAI's shape plus visionq's `usage`, `webhook`,
    `priority`); `raw` is the JSON as received."""

    id: str
    status: str
    input_file_id: str
    created_at: int
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    request_counts: BatchRequestCounts = field(default_factory=BatchRequestCounts)
    errors: tuple[BatchError, ...] = ()
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: dict[str, str] | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    webhook: dict[str, Any] | None = None
    priority: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        """The batch in `data`; KeyError, TypeError or AttributeError when it is not one."""
        if not data["id"]:
            raise KeyError("id")
        counts = data.get("request_counts") or {}
        errors = (data.get("errors") or {}).get("data") or ()
        nested = {
            "request_counts": BatchRequestCounts(**_known(BatchRequestCounts, counts)),
            "errors": tuple(BatchError(**_known(BatchError, e)) for e in errors),
            "usage": data.get("usage") or {},
        }
        return cls(**(_known(cls, data) | nested), raw=dict(data))

    @property
    def finished(self) -> bool:
        return self.status in BATCH_TERMINAL_STATUSES

    @property
    def reason(self) -> str | None:
        """Why a batch did not complete, in a line; None while it runs or once completed."""
        if self.status not in BATCH_TERMINAL_STATUSES - {"completed"}:
            return None
        if self.errors:
            first = self.errors[0]
            where = f"line {first.line}: " if first.line is not None else ""
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            return f"{first.code}: {where}{first.message}{more}"
        counts = self.request_counts
        return {
            "expired": f"the completion window ({self.completion_window}) ran out",
            "cancelled": "cancelled",
        }.get(self.status, "failed") + f" with {counts.done} of {counts.total} lines done"


@dataclass(frozen=True)
class BatchPage:
    """One page of `GET /v1/batches`, newest first; the next page starts `after` the last id."""

    data: tuple[Batch, ...]
    has_more: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPage:
        return cls(tuple(Batch.from_dict(b) for b in data["data"]), bool(data["has_more"]))


@dataclass(frozen=True)
class BatchLineFailure:
    """Why one line failed (`code` is a job error type, `batch_expired` or
    `batch_cancelled`)."""

    code: str
    message: str


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch's output or error file (OpenAI's shape): `response` holds the
    chat completion when the line succeeded, `error` why it did not."""

    id: str
    custom_id: str
    response: dict[str, Any] | None = None
    error: BatchLineFailure | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        error = data.get("error")
        failure = BatchLineFailure(**_known(BatchLineFailure, error)) if error else None
        return cls(data["id"], data["custom_id"], data.get("response"), failure, raw=dict(data))

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code == 200

    @property
    def status_code(self) -> int | None:
        return self.response.get("status_code") if self.response else None

    @property
    def content(self) -> str | None:
        """The answer's text when the line succeeded, else None."""
        if not self.ok or self.response is None:
            return None
        content = self.response["body"]["choices"][0]["message"].get("content")
        return content if isinstance(content, str) else None
