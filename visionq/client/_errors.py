"""The exceptions the SDK raises on purpose, so a script can tell "the service said no" from
"no service":

    ClientError
    ├── ApiError                  the API answered non-2xx: status, type, message, param,
    │                             retry_after (from its error object and Retry-After)
    ├── Unreachable               no usable answer: connection refused, DNS, time-out, or a
    │                             server there that does not speak the API
    ├── WaitTimeout               wait()/watch() gave up; `.jobs` holds the last states seen
    │   └── BatchWaitTimeout      batches.wait() gave up; `.batch` holds the last state seen
    ├── BatchNotEnded             a batch's results were asked for before it ended
    └── WebhookVerificationFailed a webhook whose headers, signature, timestamp or body do
                                  not check
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from visionq.client._types import Batch, Job


class ClientError(Exception):
    """Anything the client raises on purpose."""


class ApiError(ClientError):
    """The API answered with a non-2xx status and its error object."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.param = param
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        try:
            error = response.json()["error"]
            kind, message, param = error["type"], error["message"], error.get("param")
        except (ValueError, KeyError, TypeError):
            # A proxy in front of the API may answer with its own page.
            kind, message, param = "invalid_response", response.text[:200], None
        try:
            retry_after = float(response.headers["Retry-After"])
        except (KeyError, ValueError):
            retry_after = None
        return cls(response.status_code, kind, message, param, retry_after)


class Unreachable(ClientError):
    """No usable answer from the base URL: no connection, a time-out, or not the API there."""


class WaitTimeout(ClientError):
    """`wait`/`watch` ran out of time; `jobs` holds each job as last seen."""

    def __init__(self, timeout: float, jobs: tuple[Job, ...]) -> None:
        pending = ", ".join(f"{job.id} {job.status}" for job in jobs if not job.finished)
        super().__init__(f"timed out after {timeout:g}s waiting for {pending}")
        self.timeout = timeout
        self.jobs = jobs


class BatchWaitTimeout(WaitTimeout):
    """`batches.wait` ran out of time; `batch` is the batch as last seen."""

    def __init__(self, timeout: float, batch: Batch) -> None:
        ClientError.__init__(
            self, f"timed out after {timeout:g}s waiting for {batch.id} {batch.status}"
        )
        self.timeout = timeout
        self.jobs = ()
        self.batch = batch


class BatchNotEnded(ClientError):
    """A batch's results exist once it has ended (its output and error files are written
    once, at the end); `batch` is the batch as it is now."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(f"{batch.id} is {batch.status}: its results come once it has ended")
        self.batch = batch


class WebhookVerificationFailed(ClientError):
    """A webhook request that must be refused: missing headers, bad signature, stale time,
    or a signed body that is not a webhook event."""
