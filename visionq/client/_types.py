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
    webhook: WebhookState | None = None
    metadata: dict[str, str] = field(default_factory=dict)
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
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenCount:
        images = tuple(ImageCount(**_known(ImageCount, i)) for i in data["images"])
        return cls(images, data["image_tokens"], raw=dict(data))


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook: `id` is the `webhook-id` (the same on every retry: deduplicate
    on it), `timestamp` when the job finished, `job` the job object."""

    id: str
    type: str
    timestamp: int
    job: Job
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
