"""The MiMo client: one call of a prepared body, and the upstream's answer or its failure.

Upstream failures are mapped to our error tree here, at the boundary, and nowhere else.
The session is injectable (tests give one with an adapter of their own); by default it
is one pooled session per process that never reads proxies from the environment.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter

from visionq.accounts import Account
from visionq.errors import (
    ContentFilter,
    ContextLengthExceeded,
    InsufficientBalance,
    UpstreamAuth,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRetryable,
)
from visionq.settings import Settings
from visionq.upstream.dialects import dialect_for

_ERROR_TEXT_CHARS = 500


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds, from either of its two forms."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class UpstreamClient:
    """One pooled session per process for every account; an account's key goes in the
    headers of its calls and nowhere else."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False
        self._session = session

    def call(self, account: Account, api: str, body: BinaryIO, length: int) -> dict[str, Any]:
        """Post a prepared body of dialect `api` with `account`'s key; the upstream's
        answer as JSON."""
        dialect = dialect_for(api)
        key = account.key.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(length),
            "api-key": key,
            "Authorization": f"Bearer {key}",
            **dialect.headers(key),
        }
        timeout = (self._settings.upstream_connect_timeout, self._settings.upstream_timeout)
        try:
            # Never follow a redirect: requests would carry our api-key to wherever it points.
            response = self._session.post(
                dialect.url(account),
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise UpstreamRetryable(
                f"the upstream call failed: {type(exc).__name__}", retry_after=None
            ) from None
        return self._answer(response, key)

    def _answer(self, response: requests.Response, key: str) -> dict[str, Any]:
        status = response.status_code
        if status == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise UpstreamRetryable(
                    "the upstream answered a malformed body", upstream_status=200, retry_after=None
                )
            return data
        message = self._error_text(response, key)
        if status == 429 or status >= 500:
            raise UpstreamRetryable(
                message,
                upstream_status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status == 400 and "context" in message.lower() and "length" in message.lower():
            raise ContextLengthExceeded(message, upstream_status=status)
        error_class: type[UpstreamError] = {
            401: UpstreamAuth,
            403: UpstreamAuth,
            402: InsufficientBalance,
            421: ContentFilter,
        }.get(status, UpstreamBadRequest)
        raise error_class(message, upstream_status=status)

    def _error_text(self, response: requests.Response, key: str) -> str:
        """The upstream's own message, cut short, with our key scrubbed should it echo it."""
        try:
            data = response.json()
            error = data.get("error", data) if isinstance(data, dict) else {}
            text = error.get("message") if isinstance(error, dict) else None
            text = text or response.text
        except ValueError:
            text = response.text
        text = f"upstream answered {response.status_code}: {str(text)[:_ERROR_TEXT_CHARS]}"
        return text.replace(key, "[redacted]") if key else text
