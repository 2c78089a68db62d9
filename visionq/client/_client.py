"""`Client`: one session with one visionq API, its calls and their typed results."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import requests

from visionq.client._batches import Batches, Files
from visionq.client._errors import ApiError, Unreachable, WaitTimeout
from visionq.client._types import MAX_PAGE_SIZE, MAX_WAIT_SECONDS, Job, JobPage, TokenCount

DEFAULT_URL = "http://127.0.0.1:8000"
#: With an `on_update` callback a long-poll is held at most this long, because the API
#: answers a long-poll early only when the job finishes, not when it starts running.
UPDATE_INTERVAL = 2.0

#: A local file to upload, or an http(s) or data URL sent as it is.
ImageSource = str | os.PathLike[str]

T = TypeVar("T")


def _job_path(job_id: str, action: str = "") -> str:
    """The job's URL path; the id is quoted whole, so no id can reach another route."""
    return f"/v1/jobs/{quote(job_id, safe='')}{action}"


def _nothing(answer: object) -> None:
    """The parse of an answer whose body the caller does not need (DELETE's 204)."""


def _is_reference(image: ImageSource) -> bool:
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
        #: The Files API (`client.files.create(...)`) and the Batch API (`client.batches`).
        self.files = Files(self)
        self.batches = Batches(self)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"  # never the key

    def _request(
        self,
        parse: Callable[[Any], T],
        method: str,
        path: str,
        *,
        wait: float = 0.0,
        **kwargs: Any,
    ) -> T:
        """One call, its answer read by `parse`, or the error it maps to.

        An answer `parse` cannot read (JSON of another shape, or no body where one was
        due) is `Unreachable`: whatever answered is not the API this client speaks to.
        """
        url = f"{self.base_url}{path}"
        response = self._send(method, path, wait=wait, **kwargs)
        try:
            answer = None if response.status_code == 204 else response.json()
        except ValueError:
            raise Unreachable(f"{url} answered {response.status_code} without JSON") from None
        try:
            return parse(answer)
        except (KeyError, TypeError, AttributeError) as exc:
            raise Unreachable(
                f"{url} answered {response.status_code} with JSON that is not the API's"
            ) from exc

    def _send(
        self, method: str, path: str, *, wait: float = 0.0, **kwargs: Any
    ) -> requests.Response:
        """The 2xx response to one call, or the error it maps to (`stream=True` leaves the
        body to be read, and the response to be closed, by the caller)."""
        url = f"{self.base_url}{path}"
        limit = self.timeout + wait
        try:
            response = self._session.request(method, url, timeout=limit, **kwargs)
        except requests.Timeout as exc:
            raise Unreachable(f"no answer from {self.base_url} within {limit:g}s") from exc
        except requests.ConnectionError as exc:
            raise Unreachable(f"cannot connect to {self.base_url}") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"{url}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            try:
                raise ApiError.from_response(response)
            finally:
                response.close()
        return response

    def _stream(self, path: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        """The body of `GET path` in chunks as they arrive, never whole in memory. The
        request is made before the first chunk is asked for, so a 404 is raised here."""
        response = self._send("GET", path, stream=True)

        def chunks() -> Iterator[bytes]:
            with response:
                try:
                    yield from response.iter_content(chunk_size)
                except requests.RequestException as exc:
                    raise Unreachable(f"{self.base_url}{path}: {exc}") from exc

        return chunks()

    def _send_with_images(
        self,
        parse: Callable[[Any], T],
        path: str,
        images: Sequence[ImageSource],
        body: dict[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> T:
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
            return self._request(parse, "POST", path, headers=headers, wait=wait, **payload)

    def submit(
        self,
        images: Sequence[ImageSource] = (),
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
        return self._send_with_images(
            Job.from_dict, "/v1/jobs", images, body, headers=headers, wait=wait
        )

    def count_tokens(
        self,
        images: Sequence[ImageSource] = (),
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
    ) -> TokenCount:
        """MiMo's image-token count without creating a job. The API needs the bytes: local
        files and data URLs count, an http(s) URL is a 400."""
        body: dict[str, Any] = {"model": model} if model else {}
        if messages is not None:
            body["messages"] = list(messages)
        return self._send_with_images(TokenCount.from_dict, "/v1/tokens", images, body)

    def usage(
        self,
        *,
        start: float | str | None = None,
        end: float | str | None = None,
        group_by: str | Sequence[str] = "day",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The tenant's usage and cost per bucket (`GET /v1/usage`): `start` and `end` as
        Unix seconds or ISO 8601, `group_by` one or more of hour, day, model, account,
        tenant; `tenant` and `group_by="tenant"` need an admin key."""
        grouped = group_by if isinstance(group_by, str) else ",".join(group_by)
        params: dict[str, str] = {"group_by": grouped}
        for name, value in (("start", start), ("end", end), ("tenant", tenant)):
            if value is not None:
                params[name] = str(value)
        return self._request(_usage_answer, "GET", "/v1/usage", params=params)

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        """The job; with `wait` (up to 60 s) the API holds the answer until it finishes."""
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return self._request(Job.from_dict, "GET", _job_path(job_id), params=params, wait=wait)

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
        return self._request(Job.from_dict, "POST", _job_path(job_id, "/cancel"))

    def delete(self, job_id: str) -> None:
        """Remove the job and its stored images; a later `get` is `ApiError` 404."""
        self._request(_nothing, "DELETE", _job_path(job_id))

    def redeliver_webhook(self, job_id: str) -> Job:
        """Send the finished job's webhook event again (same `webhook-id`)."""
        return self._request(Job.from_dict, "POST", _job_path(job_id, "/webhook/redeliver"))

    def list_page(
        self, status: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> JobPage:
        """One page of the tenant's jobs, newest first; `after` is a previous page's `next`."""
        given = {"status": status, "limit": limit, "after": after}
        params = {k: v for k, v in given.items() if v is not None}
        return self._request(JobPage.from_dict, "GET", "/v1/jobs", params=params)

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


def _usage_answer(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise TypeError("not a usage answer")
    return answer
