"""Every error visionq reports, each mapped once to its API type and HTTP status.

    VisionqError                      (500 internal)
    ├── ConfigurationError            bad environment; raised at start-up, never served
    ├── InvalidRequest                400 invalid_request
    │   └── UrlRefused                a URL the fetcher will not touch (scheme, address)
    ├── Unauthorized                  401 unauthorized
    ├── NotFound                      404 not_found
    ├── Conflict                      409 conflict
    │   └── StaleLine                 a batch line admitted by someone else already
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_media_type
    ├── InvalidImage                  422 invalid_image
    ├── RateLimited                   429 rate_limited      (Retry-After)
    ├── Unavailable                   503 unavailable       (Retry-After)
    └── JobError                      only ever recorded on a failed job
        ├── InvalidImageUrl           invalid_image_url
        ├── Canceled                  canceled
        ├── BatchExpired              batch_expired (a batch line its batch's window ended)
        ├── Internal                  internal
        └── UpstreamError             carries upstream_status (None: found before any call)
            ├── ContextLengthExceeded context_length_exceeded (400 when found at submit)
            ├── UpstreamBadRequest    upstream_bad_request (400/404, and any 3xx)
            ├── UpstreamAuth          upstream_auth (401/403)
            ├── InsufficientBalance   insufficient_balance (402)
            ├── ContentFilter         content_filter (421)
            ├── UpstreamUnavailable   upstream_unavailable (after the retry budget)
            └── UpstreamRetryable     429/5xx/time-out/dropped connection: try again

The HTTP layer renders any `VisionqError` with `to_dict()`; the pipeline stores the same
dict on a failed job, so a client sees one shape wherever an error comes from.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VisionqError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "param": self.param}

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles a task's exception (and billiard a pool child's); the default
        # rebuilds it as `cls(*args)`, which keyword-only fields do not survive.
        return (_restored, (type(self), self.__dict__.copy()))


def _restored(cls: type[VisionqError], state: dict[str, Any]) -> VisionqError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class ConfigurationError(VisionqError):
    type = "configuration"


class InvalidRequest(VisionqError):
    status = 400
    type = "invalid_request"


class UrlRefused(InvalidRequest):
    """A webhook URL refused at submit is this 400; an image URL fails its job instead."""


class Unauthorized(VisionqError):
    status = 401
    type = "unauthorized"


class NotFound(VisionqError):
    status = 404
    type = "not_found"


class Conflict(VisionqError):
    status = 409
    type = "conflict"


class StaleLine(Conflict):
    """A batch line whose batch has moved past it: another worker admitted it (never
    served; the admitting worker stops)."""


class PayloadTooLarge(VisionqError):
    status = 413
    type = "payload_too_large"


class UnsupportedMediaType(VisionqError):
    status = 415
    type = "unsupported_media_type"


class InvalidImage(VisionqError):
    status = 422
    type = "invalid_image"


class _RetryAfter(VisionqError):
    def __init__(self, message: str, *, retry_after: float = 1.0, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class RateLimited(_RetryAfter):
    status = 429
    type = "rate_limited"


class QuotaExceeded(_RetryAfter):
    """The tenant's token quota for the period is spent (`VISIONQ_TENANT_QUOTAS`); also the
    error of a job refused before its paid call for it."""

    status = 429
    type = "quota_exceeded"


class Unavailable(_RetryAfter):
    status = 503
    type = "unavailable"


class JobError(VisionqError):
    """An error that fails a job after it was accepted."""


class DeadlineExceeded(JobError):
    """A job's `Cancel-After` (or `deadline`) passed while it waited: it ends `canceled`."""

    type = "deadline_exceeded"


class InvalidImageUrl(JobError):
    type = "invalid_image_url"


class Canceled(JobError):
    type = "canceled"


class BatchExpired(JobError):
    type = "batch_expired"


class Internal(JobError):
    type = "internal"


class UpstreamError(JobError):
    def __init__(self, message: str, *, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "upstream_status": self.upstream_status}


class ContextLengthExceeded(UpstreamError):
    """Found at submit when the text and the images whose size is known already pass the
    model's context (a 400, like the upstream's own answer); otherwise a job error."""

    status = 400
    type = "context_length_exceeded"


class UpstreamBadRequest(UpstreamError):
    type = "upstream_bad_request"


class UpstreamAuth(UpstreamError):
    type = "upstream_auth"


class InsufficientBalance(UpstreamError):
    type = "insufficient_balance"


class ContentFilter(UpstreamError):
    type = "content_filter"


class UpstreamUnavailable(UpstreamError):
    type = "upstream_unavailable"


class UpstreamRetryable(UpstreamError):
    """Worth another try later; becomes `UpstreamUnavailable` when tries run out."""

    type = "upstream_unavailable"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, retry_after: float | None
    ) -> None:
        super().__init__(message, upstream_status=upstream_status)
        self.retry_after = retry_after


def type_for_status(status: int) -> str:
    """The error type of an HTTP error we did not raise ourselves (Werkzeug's 404 for an
    unknown route, its 405, a 408): the type of our own most general error with that
    status, found breadth-first down the tree, so that 400 is `invalid_request` rather
    than a subclass's `context_length_exceeded`. Any other client error is the client's
    invalid request; anything else is ours, `internal`."""
    level: list[type[VisionqError]] = [VisionqError]
    while level:
        for cls in level:
            if cls.status == status:
                return cls.type
        level = [sub for cls in level for sub in cls.__subclasses__()]
    return InvalidRequest.type if 400 <= status < 500 else VisionqError.type
