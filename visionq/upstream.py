"""The MiMo client: request bodies for both formats, the call, and its answer as a `result`.

Bodies are written to a file by the CPU-bound prepare stage, base64 streamed straight in,
so the I/O-bound upstream stage only streams a finished file over a pooled connection and
never holds or encodes a 50 MB image. Upstream failures are mapped to our error tree here,
at the boundary, and nowhere else.
"""

from __future__ import annotations

import email.utils
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter

from visionq.errors import (
    ContentFilter,
    ContextLengthExceeded,
    InsufficientBalance,
    UpstreamAuth,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRetryable,
)
from visionq.media import images
from visionq.settings import Settings

#: How an image part points at job image n inside a stored request.
IMAGE_REF = "visionq:image:"
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096
_ERROR_TEXT_CHARS = 500

#: Opens job image n as it is to be sent.
ImageOpener = Callable[[int], BinaryIO]


def image_ref(index: int) -> str:
    return f"{IMAGE_REF}{index}"


def _ref_index(url: str) -> int:
    return int(url[len(IMAGE_REF) :])


def write_body(
    out: BinaryIO,
    *,
    api: str,
    model: str,
    request: dict[str, Any],
    formats: list[str],
    open_image: ImageOpener,
) -> None:
    """Write the upstream JSON for `api`, each image's base64 streamed in at its place.

    The body is serialised once with random markers where the images go, then written
    piece by piece, so the base64 text is never part of a Python string.
    """
    marker = f"VQIMG{secrets.token_hex(8)}X"
    build = _anthropic_body if api == "anthropic" else _openai_body
    # ASCII escapes: a lone surrogate in a prompt stays a valid JSON escape, not a crash.
    text = json.dumps(build(model, request, marker, formats), separators=(",", ":"))
    pieces = re.split(f"{marker}(\\d+)", text)
    out.write(pieces[0].encode())
    for i in range(1, len(pieces), 2):
        index = int(pieces[i])
        if api != "anthropic":
            out.write(images.data_url_prefix(formats[index]).encode())
        with open_image(index) as fp:
            images.write_base64(fp, out)
        out.write(pieces[i + 1].encode())


def _openai_body(
    model: str, request: dict[str, Any], marker: str, formats: list[str]
) -> dict[str, Any]:
    messages = []
    for message in request["messages"]:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {
                    **part,
                    "image_url": {
                        **part["image_url"],
                        "url": marker + str(_ref_index(part["image_url"]["url"])),
                    },
                }
                if part["type"] == "image_url"
                else part
                for part in content
            ]
        messages.append({**message, "content": content})
    body: dict[str, Any] = {"model": model, "messages": messages, **request.get("sampling", {})}
    if request.get("max_completion_tokens"):
        body["max_completion_tokens"] = request["max_completion_tokens"]
    return body


def _anthropic_body(
    model: str, request: dict[str, Any], marker: str, formats: list[str]
) -> dict[str, Any]:
    """OpenAI-format messages translated: system to `system`, image parts to image blocks."""
    system: list[str] = []
    messages = []
    for message in request["messages"]:
        content = message["content"]
        if message["role"] == "system":
            system.append(
                content
                if isinstance(content, str)
                else "\n".join(p["text"] for p in content if p["type"] == "text")
            )
            continue
        if isinstance(content, list):
            content = [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": images.mime_type(
                            formats[_ref_index(part["image_url"]["url"])]
                        ),
                        "data": marker + str(_ref_index(part["image_url"]["url"])),
                    },
                }
                if part["type"] == "image_url"
                else {"type": "text", "text": part["text"]}
                for part in content
            ]
        messages.append({"role": message["role"], "content": content})
    sampling = request.get("sampling", {})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.get("max_completion_tokens") or DEFAULT_ANTHROPIC_MAX_TOKENS,
        "messages": messages,
        **{k: v for k, v in sampling.items() if k in ("temperature", "top_p", "thinking")},
    }
    if "stop" in sampling:
        stop = sampling["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if system:
        body["system"] = "\n\n".join(system)
    return body


def parse_result(api: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The job's `result` from the upstream's answer, the same shape for both formats."""
    try:
        if api == "anthropic":
            blocks = raw["content"]
            thinking = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
            usage = dict(raw.get("usage") or {})
            prompt = int(usage.get("input_tokens", 0))
            completion = int(usage.get("output_tokens", 0))
            return {
                "content": "".join(b.get("text", "") for b in blocks if b.get("type") == "text"),
                "reasoning_content": "".join(thinking) if thinking else None,
                "finish_reason": raw.get("stop_reason"),
                "usage": {
                    **usage,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
                "response": raw,
            }
        choice = raw["choices"][0]
        message = choice["message"]
        usage = dict(raw.get("usage") or {})
        usage.setdefault(
            "total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        )
        return {
            "content": message.get("content") or "",
            "reasoning_content": message.get("reasoning_content"),
            "finish_reason": choice.get("finish_reason"),
            "usage": usage,
            "response": raw,
        }
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UpstreamRetryable(
            "the upstream answered a malformed body", upstream_status=200, retry_after=None
        ) from None


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
    """One pooled session per process; the key goes in headers and nowhere else."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._key = settings.mimo_api_key.get_secret_value() if settings.mimo_api_key else ""
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False
        self._session = session

    def _url(self, api: str) -> str:
        if api == "anthropic":
            return self._settings.upstream_anthropic_base_url.rstrip("/") + "/v1/messages"
        return self._settings.upstream_base_url.rstrip("/") + "/chat/completions"

    def call(self, api: str, body: BinaryIO, length: int) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(length),
            "api-key": self._key,
            "Authorization": f"Bearer {self._key}",
        }
        if api == "anthropic":
            headers["x-api-key"] = self._key
            headers["anthropic-version"] = "2023-06-01"
        timeout = (self._settings.upstream_connect_timeout, self._settings.upstream_timeout)
        try:
            # Never follow a redirect: requests would carry our api-key to wherever it points.
            response = self._session.post(
                self._url(api),
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise UpstreamRetryable(
                f"the upstream call failed: {type(exc).__name__}", retry_after=None
            ) from None
        return self._answer(response)

    def _answer(self, response: requests.Response) -> dict[str, Any]:
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
        message = self._error_text(response)
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

    def _error_text(self, response: requests.Response) -> str:
        """The upstream's own message, cut short, with our key scrubbed should it echo it."""
        try:
            data = response.json()
            error = data.get("error", data) if isinstance(data, dict) else {}
            text = error.get("message") if isinstance(error, dict) else None
            text = text or response.text
        except ValueError:
            text = response.text
        text = f"upstream answered {response.status_code}: {str(text)[:_ERROR_TEXT_CHARS]}"
        return text.replace(self._key, "[redacted]") if self._key else text
