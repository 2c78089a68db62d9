"""Request and response shapes (API.md), as pydantic models.

These models validate every request body and are the only source of the OpenAPI document
(`service/openapi.py` renders them); there is no second, hand-written schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(BaseModel):
    """`url` is an http(s) URL, a `data:` URL, or `upload:<n>` in multipart requests."""

    model_config = ConfigDict(extra="allow")
    url: str = Field(min_length=1)


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class TextPart(_Strict):
    type: Literal["text"]
    text: str


ContentPart = Annotated[ImagePart | TextPart, Field(discriminator="type")]


class Message(BaseModel):
    """One OpenAI chat message; extra keys such as `name` pass through to the upstream."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class WebhookSpec(_Strict):
    url: str = Field(min_length=1, max_length=2048)


class JobRequest(_Strict):
    """The body of `POST /v1/jobs` and `POST /v1/tokens`.

    Either `messages` (the upstream's own chat format) or the `prompt`/`images`/`system`
    shorthand. The sampling fields named here pass through to the upstream unchanged.
    """

    model: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    prompt: str | None = None
    images: list[str] | None = None
    system: str | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    api: Literal["openai", "anthropic"] = "openai"
    resize: Literal["auto", "never"] = "auto"
    webhook: WebhookSpec | None = None
    metadata: dict[str, str] | None = None
    #: Unix seconds: still waiting for a worker or the upstream budget then, the job ends
    #: `canceled` with `deadline_exceeded` (the `Cancel-After` header says it as a delay).
    deadline: float | None = Field(default=None, gt=0)
    # Sampling fields passed through to the upstream as they are.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _one_body_form(self) -> JobRequest:
        if self.messages is None and self.prompt is None and self.images is None:
            raise ValueError("give either `messages` or `prompt`/`images`")
        if self.messages is not None and (
            self.prompt is not None or self.images is not None or self.system is not None
        ):
            raise ValueError("`messages` cannot be combined with `prompt`, `images` or `system`")
        return self

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"at most {METADATA_MAX_KEYS} metadata keys")
        for key, item in value.items():
            if len(key) > METADATA_MAX_KEY_CHARS or len(item) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(
                    f"metadata keys are at most {METADATA_MAX_KEY_CHARS} characters and "
                    f"values at most {METADATA_MAX_VALUE_CHARS}"
                )
        return value

    def sampling(self) -> dict[str, Any]:
        """The pass-through upstream fields that were set."""
        return self.model_dump(include=set(SAMPLING_FIELDS), exclude_none=True)


SAMPLING_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "response_format",
        "thinking",
        "user",
    }
)


class JobForm(_Strict):
    """The multipart form of `POST /v1/jobs` and `POST /v1/tokens`, for local files.

    `image` files in order, and either `request` (a JobRequest as JSON, whose parts may
    point at `upload:<n>`) or the plain fields, which make the shorthand request.
    """

    image: list[bytes] = Field(
        default_factory=list, json_schema_extra={"items": {"type": "string", "format": "binary"}}
    )
    request: str | None = Field(default=None, description="a JobRequest as JSON")
    prompt: str | None = None
    system: str | None = None
    model: str | None = None
    max_completion_tokens: int | None = None
    webhook_url: str | None = None
    api: Literal["openai", "anthropic"] | None = None
    resize: Literal["auto", "never"] | None = None
    deadline: float | None = None

    @classmethod
    def plain_fields(cls) -> frozenset[str]:
        return frozenset(cls.model_fields) - {"image", "request"}


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None
    upstream_status: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class JobImage(BaseModel):
    """One image of a job; all but `index` and `source` are null until a worker validated it."""

    index: int
    source: Literal["upload", "data_url", "url", "file"]
    url: str | None = None
    file_id: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    image_tokens: int | None = None
    resized: bool | None = None


class UsageEstimate(BaseModel):
    image_tokens: int | None = None


class Result(BaseModel):
    content: str
    reasoning_content: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any]
    response: dict[str, Any]


class StoredResult(TypedDict):
    """A job's result as the upstream step parses and stores it, the same for both
    dialects; `Result` validates it on its way to a client."""

    content: str
    reasoning_content: str | None
    finish_reason: str | None
    usage: dict[str, Any]
    response: dict[str, Any]


class StoredRequest(TypedDict):
    """What the intake keeps of a request for the worker: the OpenAI messages (each image
    replaced by its `visionq:image:<n>` reference), the completion cap, the sampling fields
    passed through as given, and the resize choice."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None
    sampling: dict[str, Any]
    resize: str


class WebhookState(BaseModel):
    url: str
    status: Literal["pending", "delivered", "failed", "disabled"]
    attempts: int = 0
    last_status_code: int | None = None


class Job(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    api: Literal["openai", "anthropic"]
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    images: list[JobImage]
    usage_estimate: UsageEstimate
    result: Result | None = None
    error: ErrorBody | None = None
    attempts: int = 0
    #: The upstream account that answered its last call, by name (never its key).
    account: str | None = None
    #: What its upstream usage cost, in dollars, at `VISIONQ_PRICES` (absent without one).
    cost: float | None = None
    #: Unix seconds, when it has one (`Cancel-After` or `deadline`).
    deadline: float | None = None
    webhook: WebhookState | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    #: A batch line's job: its batch and the line's custom_id (absent otherwise).
    batch_id: str | None = None
    custom_id: str | None = None


class TokenCountImage(BaseModel):
    index: int
    format: str
    width: int
    height: int
    image_tokens: int


class TokenCount(BaseModel):
    images: list[TokenCountImage]
    image_tokens: int
    #: The images and the text's estimate, as the context check counts them.
    input_tokens: int
    #: Dollars for that input at the model's input price, absent without `VISIONQ_PRICES`.
    input_cost: float | None = None


class UsageJobs(BaseModel):
    succeeded: int
    failed: int
    canceled: int


class UsageCounters(BaseModel):
    """What a bucket's jobs used upstream (`GET /v1/usage`)."""

    #: Upstream calls that answered (and were billed).
    requests: int
    jobs: UsageJobs
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    image_tokens: int
    #: Dollars at `VISIONQ_PRICES` as they were when each job finished; absent without
    #: prices.
    cost: float | None = None


class UsageBucket(UsageCounters):
    start_time: int
    end_time: int
    #: Set when the answer is grouped by it.
    model: str | None = None
    account: str | None = None
    tenant: str | None = None


class UsageReport(BaseModel):
    object: Literal["usage"]
    start_time: int
    end_time: int
    group_by: list[str]
    data: list[UsageBucket]
    total: UsageCounters


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool
    next: str | None


def whole_number(text: str, *, max_digits: int = 6) -> int | None:
    """`text` as a small non-negative integer, or None (`"²".isdigit()` is True, too)."""
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


class BatchWebhook(_Strict):
    url: str = Field(min_length=1, max_length=2048)


class BatchCreate(_Strict):
    """The body of `POST /v1/batches` (OpenAI's, plus visionq's `webhook` and `priority`)."""

    input_file_id: str = Field(min_length=1)
    endpoint: Literal["/v1/chat/completions"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None
    webhook: BatchWebhook | None = None
    priority: Literal["batch", "interactive"] = "batch"

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return JobRequest._metadata_limits(value)


class AnthropicBatchRequest(BaseModel):
    """One request of an Anthropic message batch; `params` is checked line by line."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str
    params: dict[str, Any]


class AnthropicBatchCreate(_Strict):
    """The body of `POST /anthropic/v1/messages/batches` (Anthropic's, plus visionq's
    `webhook` and `priority`)."""

    requests: list[AnthropicBatchRequest] = Field(min_length=1, max_length=50_000)
    webhook: BatchWebhook | None = None
    priority: Literal["batch", "interactive"] = "batch"


#: OpenAI's batch statuses, which both forms of batch move through.
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int
    #: visionq's: lines a cancel stopped (in the error file, not in `failed`).
    canceled: int


class Batch(BaseModel):
    """OpenAI's batch object; `webhook` and `priority` are visionq's additions."""

    id: str
    object: Literal["batch"]
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None
    usage: dict[str, Any]
    webhook: dict[str, Any] | None
    priority: Literal["batch", "interactive"]


class BatchList(BaseModel):
    object: Literal["list"]
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


class MessageBatchCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    """Anthropic's message batch; `usage` and `webhook` are visionq's additions."""

    id: str
    type: Literal["message_batch"]
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchCounts
    ended_at: str | None
    created_at: str
    expires_at: str
    cancel_initiated_at: str | None
    archived_at: str | None
    results_url: str | None
    usage: dict[str, Any]
    webhook: dict[str, Any] | None


class MessageBatchList(BaseModel):
    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class FileObject(BaseModel):
    """OpenAI's file object; a vision file adds what its upload measured (visionq's)."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: Literal["batch", "batch_output", "vision"]
    status: Literal["processed"]
    format: str | None = None
    width: int | None = None
    height: int | None = None
    image_tokens: int | None = None


class FileList(BaseModel):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class FileForm(BaseModel):
    """The multipart form of `POST /v1/files`."""

    file: bytes = Field(json_schema_extra={"format": "binary"})
    purpose: Literal["batch", "vision"]
