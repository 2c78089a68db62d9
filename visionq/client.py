"""The Python client for the visionq API (API.md); the `visionq` client commands run on it.

    from visionq import Client

    with Client() as client:                # VISIONQ_URL and VISIONQ_KEY
        job = client.submit(["photo.jpg", "https://example.com/b.png"], "compare them")
        job = client.wait(job.id)
        print(job.content)

Every failure is one of these, so a script can tell "the service said no" from "no service":

    ClientError
    ├── ApiError                  the API answered non-2xx: status, type, message, param,
    │                             retry_after (from its error object and Retry-After)
    ├── Unreachable               no usable answer: connection refused, DNS, time-out, or a
    │                             server there that does not speak the API
    ├── WaitTimeout               wait()/watch() gave up; `.jobs` holds the last states seen
    └── WebhookVerificationFailed a webhook whose headers, signature or timestamp do not check

The results are frozen dataclasses of the client's own, not the server's pydantic models:
those are strict on purpose (they validate requests), while a client has to keep working
when a newer server adds a field. Unknown fields are ignored here and kept in `.raw`.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import requests
from standardwebhooks import Webhook

DEFAULT_URL = "http://127.0.0.1:8000"
#: The API's job states (API.md, "The job object"), and those that never change again.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset(JOB_STATUSES[2:])
#: The longest `?wait=` the API holds a request for, and the largest page it serves.
MAX_WAIT_SECONDS = 60.0
MAX_PAGE_SIZE = 100
#: With an `on_update` callback a long-poll is held at most this long, because the API
#: answers a long-poll early only when the job finishes, not when it starts running.
UPDATE_INTERVAL = 2.0

Image = str | os.PathLike[str]


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


class WebhookVerificationFailed(ClientError):
    """A webhook request that must be refused: missing headers, bad signature, stale time."""


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
class JobError:
    """Why a job failed (API.md, "Errors"); `upstream_status` where MiMo answered."""

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
    error: JobError | None = None
    attempts: int = 0
    webhook: WebhookState | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        nested = {
            "images": tuple(JobImage(**_known(JobImage, i)) for i in data.get("images") or ()),
            "result": Result(**_known(Result, data["result"])) if data.get("result") else None,
            "error": JobError(**_known(JobError, data["error"])) if data.get("error") else None,
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


def _is_reference(image: Image) -> bool:
    """A URL or data URL is sent as it is; anything else names a local file to upload."""
    return isinstance(image, str) and image.startswith(("http://", "https://", "data:"))


class Client:
    """A session with one visionq API.

    `base_url` and `api_key` default to the environment's `VISIONQ_URL` (else
    http://127.0.0.1:8000) and `VISIONQ_KEY`. `timeout` is the seconds one HTTP request
    may take; a long-poll gets its wait on top. The client is not thread-safe (its
    `requests.Session` is shared): use one per thread.
    """

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0
    ) -> None:
        self.base_url = (base_url or os.environ.get("VISIONQ_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        key = api_key or os.environ.get("VISIONQ_KEY")
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"  # never the key

    def _request(self, method: str, path: str, *, wait: float = 0.0, **kwargs: Any) -> Any:
        """One call; the JSON answer, None for 204, or the error it maps to."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, timeout=self.timeout + wait, **kwargs)
        except requests.Timeout as exc:
            raise Unreachable(f"no answer from {self.base_url} within {self.timeout:g}s") from exc
        except requests.ConnectionError as exc:
            raise Unreachable(f"cannot connect to {self.base_url}") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"{url}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise ApiError.from_response(response)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise Unreachable(f"{url} answered {response.status_code} without JSON") from None

    def _send_with_images(
        self,
        path: str,
        images: Sequence[Image],
        body: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """POST a job-shaped body: local files as multipart uploads, in order, referred to as
        `upload:<n>`; URLs and data URLs inline."""
        if "messages" in body and any(_is_reference(image) for image in images):
            raise ValueError(
                "with `messages`, put URLs in the messages; `images` are then only files "
                "to upload, which the messages may refer to as upload:<n>"
            )
        with ExitStack() as files:
            refs: list[str] = []
            uploads: list[Any] = []
            for image in images:
                if _is_reference(image):
                    refs.append(str(image))
                    continue
                source = Path(image)
                refs.append(f"upload:{len(uploads)}")
                uploads.append(("image", (source.name, files.enter_context(source.open("rb")))))
            if "messages" not in body and refs:
                body = body | {"images": refs}
            if uploads:
                payload: dict[str, Any] = {"files": uploads, "data": {"request": json.dumps(body)}}
            else:
                payload = {"json": body}
            return self._request("POST", path, headers=headers, wait=wait, **payload)

    def submit(
        self,
        images: Sequence[Image] = (),
        prompt: str | None = None,
        *,
        model: str | None = None,
        system: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_completion_tokens: int | None = None,
        api: str | None = None,
        wait: float = 0.0,
        **upstream: Any,
    ) -> Job:
        """Create a job from `images` and `prompt`, or from OpenAI-style `messages`.

        Local paths are uploaded; URLs and data URLs are sent as they are. With `messages`,
        `images` may only name local files, which the messages refer to as `upload:<n>`.
        `wait` (up to 60 s) asks the API to answer with the finished job if it finishes in
        time. Other keyword arguments (`temperature`, `top_p`, ...) pass to the upstream.
        """
        given = {
            "model": model,
            "prompt": prompt,
            "system": system,
            "messages": list(messages) if messages is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
            "max_completion_tokens": max_completion_tokens,
            "api": api,
            "webhook": {"url": webhook_url} if webhook_url else None,
            **upstream,
        }
        body = {name: value for name, value in given.items() if value is not None}
        headers = {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if wait:
            headers["Prefer"] = f"wait={wait:g}"
        answer = self._send_with_images("/v1/jobs", images, body, headers=headers, wait=wait)
        return Job.from_dict(answer)

    def count_tokens(
        self,
        images: Sequence[Image] = (),
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
    ) -> TokenCount:
        """MiMo's image-token count without creating a job. The API needs the bytes: local
        files and data URLs count, an http(s) URL is a 400."""
        body: dict[str, Any] = {"model": model} if model else {}
        if messages is not None:
            body["messages"] = list(messages)
        return TokenCount.from_dict(self._send_with_images("/v1/tokens", images, body))

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        """The job; with `wait` (up to 60 s) the API holds the answer until it finishes."""
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return Job.from_dict(
            self._request("GET", f"/v1/jobs/{quote(job_id, safe='')}", params=params, wait=wait)
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Long-poll until the job is finished; `WaitTimeout` after `timeout` seconds.

        `on_update(job)` is called with the first state seen and then on each status change.
        """
        return self.watch([job_id], timeout=timeout, on_update=on_update)[0]

    def watch(
        self,
        job_ids: Sequence[str],
        *,
        timeout: float = 600.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> tuple[Job, ...]:
        """Follow several jobs until all are finished; the finished jobs in the given order.

        Each round long-polls the first unfinished job, then looks at the others once, so a
        finish is seen at once and the rest within a round. `on_update` as in `wait`.
        """
        order = tuple(dict.fromkeys(job_ids))
        deadline = time.monotonic() + timeout
        latest: dict[str, Job] = {}

        def seen(job: Job) -> None:
            before = latest.get(job.id)
            latest[job.id] = job
            if on_update is not None and (before is None or before.status != job.status):
                on_update(job)

        for job_id in order:
            seen(self.get(job_id))
        hold = MAX_WAIT_SECONDS if on_update is None else UPDATE_INTERVAL
        while pending := [job_id for job_id in order if not latest[job_id].finished]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(timeout, tuple(latest[job_id] for job_id in order))
            seen(self.get(pending[0], wait=min(remaining, hold)))
            for job_id in pending[1:]:
                seen(self.get(job_id))
        return tuple(latest[job_id] for job_id in order)

    def cancel(self, job_id: str) -> Job:
        """Cancel an unfinished job (a canceled one is returned as it is); `ApiError` 409
        `conflict` if it already succeeded or failed."""
        return Job.from_dict(self._request("POST", f"/v1/jobs/{quote(job_id, safe='')}/cancel"))

    def delete(self, job_id: str) -> None:
        """Remove the job and its stored images; a later `get` is `ApiError` 404."""
        self._request("DELETE", f"/v1/jobs/{quote(job_id, safe='')}")

    def redeliver_webhook(self, job_id: str) -> Job:
        """Send the finished job's webhook event again (same `webhook-id`)."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/webhook/redeliver"
        return Job.from_dict(self._request("POST", path))

    def list_page(
        self, status: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> JobPage:
        """One page of the tenant's jobs, newest first; `after` is a previous page's `next`."""
        given = {"status": status, "limit": limit, "after": after}
        page = self._request(
            "GET", "/v1/jobs", params={k: v for k, v in given.items() if v is not None}
        )
        return JobPage(
            tuple(Job.from_dict(j) for j in page["data"]), page["has_more"], page["next"]
        )

    def list(
        self, status: str | None = None, *, limit: int | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """The tenant's jobs, newest first, at most `limit` of them (None: all).

        Lazy: a page of `page_size` is fetched only when iteration reaches it, so errors
        are raised by the iteration, not by this call.
        """
        after = None
        count = 0
        while limit is None or count < limit:
            size = min(page_size, MAX_PAGE_SIZE)
            if limit is not None:
                size = min(size, limit - count)
            page = self.list_page(status, limit=size, after=after)
            yield from page.data
            count += len(page.data)
            if not page.has_more:
                return
            after = page.next


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: float = 300.0,
) -> WebhookEvent:
    """Check a webhook request as the receiving end should, and return its event.

    `secret` is the `whsec_...` secret, or several of them while one is being rotated:
    the request passes when any signature in `webhook-signature` verifies with any of
    them. A `webhook-timestamp` more than `tolerance` seconds from now is refused, so a
    captured request cannot be replayed later. Signatures are the `standardwebhooks`
    package's own; timestamps are checked here because its tolerance is fixed.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("give at least one webhook secret")
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationFailed("a webhook-id, webhook-timestamp or signature is missing")
    try:
        sent_at = int(stamp)
        text = body.decode() if isinstance(body, bytes) else body
    except (ValueError, UnicodeDecodeError):
        raise WebhookVerificationFailed("the timestamp or the body is malformed") from None
    skew = time.time() - sent_at
    if abs(skew) > tolerance:
        raise WebhookVerificationFailed(
            f"the timestamp is {abs(skew):.0f}s {'old' if skew > 0 else 'ahead'}, "
            f"beyond the {tolerance:g}s tolerance"
        )
    given = [s.partition(",")[2].encode() for s in signatures.split() if s.startswith("v1,")]
    at = datetime.fromtimestamp(sent_at, tz=UTC)
    expected = [Webhook(s).sign(msg_id, at, text).partition(",")[2].encode() for s in secrets]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise WebhookVerificationFailed("no signature matches the webhook secret(s)")
    event = json.loads(text)
    return WebhookEvent(
        msg_id, event["type"], event["timestamp"], Job.from_dict(event["data"]), raw=event
    )
