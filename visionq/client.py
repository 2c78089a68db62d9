"""A small Python client for the visionq API; the CLI's `submit` is built on it."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from visionq.models import TERMINAL_STATUSES


class ApiError(Exception):
    """A non-2xx answer, with the API's error object."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('type')}: {error.get('message')}")
        self.status = status
        self.error = error


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._timeout = timeout
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def _check(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"type": "invalid_response", "message": response.text[:200]}}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body.get("error", {}))
        return body

    def submit(
        self,
        images: list[str],
        prompt: str | None = None,
        *,
        model: str | None = None,
        webhook_url: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Local paths are uploaded; URLs and data URLs are passed as they are, in order."""
        request: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if model:
            request["model"] = model
        if webhook_url:
            request["webhook"] = {"url": webhook_url}
        if prompt is not None:
            request["prompt"] = prompt
        refs: list[str] = []
        files: list[tuple[str, Any]] = []
        with ExitStack() as stack:
            for image in images:
                if image.startswith(("http://", "https://", "data:")):
                    refs.append(image)
                else:
                    path = Path(image)
                    refs.append(f"upload:{len(files)}")
                    files.append(("image", (path.name, stack.enter_context(path.open("rb")))))
            request["images"] = refs
            if files:
                response = self._session.post(
                    f"{self.base_url}/v1/jobs",
                    files=files,
                    data={"request": json.dumps(request)},
                    timeout=self._timeout,
                )
            else:
                response = self._session.post(
                    f"{self.base_url}/v1/jobs", json=request, timeout=self._timeout
                )
        return self._check(response)

    def get(self, job_id: str, *, wait: float = 0) -> dict[str, Any]:
        params = {"wait": f"{wait:g}"} if wait else None
        response = self._session.get(
            f"{self.base_url}/v1/jobs/{job_id}", params=params, timeout=self._timeout + wait
        )
        return self._check(response)

    def wait(self, job_id: str, *, timeout: float = 600) -> dict[str, Any]:
        """Long-poll until the job is finished or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            job = self.get(job_id, wait=max(0.0, min(60.0, remaining)))
            if job["status"] in TERMINAL_STATUSES or remaining <= 0:
                return job
