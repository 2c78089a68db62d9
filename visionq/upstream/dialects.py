"""The two APIs MiMo speaks, one object each: where to send, which headers, the body built
from a job's request, and the job's `result` read from the answer.

A job's request is kept in the OpenAI chat-completions shape whatever its `api`; each
dialect translates it into its own body. Adding a third API is one more class here and one
entry in `DIALECTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from visionq.accounts import Account
from visionq.errors import UpstreamRetryable
from visionq.media import images
from visionq.models import StoredRequest, StoredResult

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096


@dataclass(frozen=True)
class ImageSlot:
    """Where one image goes in a body being built: the placeholder the body writer
    replaces with the image's base64, and the image's format."""

    placeholder: str
    format: str


#: The slot of the image an `image_url` part points at (by its `visionq:image:<n>` URL).
SlotFor = Callable[[str], ImageSlot]


class Dialect(Protocol):
    def url(self, account: Account) -> str:
        """The endpoint a request of this dialect is posted to."""

    def headers(self, key: str) -> dict[str, str]:
        """The headers this dialect needs beyond the ones every call sends."""

    def body(self, model: str, request: StoredRequest, slot: SlotFor) -> dict[str, Any]:
        """The request body, with each image's `ImageSlot.placeholder` where its base64 goes."""

    def image_prefix(self, fmt: str) -> str:
        """What is written just before an image's base64 at its placeholder."""

    def parse_result(self, raw: dict[str, Any]) -> StoredResult:
        """The job's `result` from the answer; KeyError and the like when it is malformed."""


class ChatCompletions:
    """OpenAI's chat completions: the job's request nearly as it is, images as data URLs."""

    def url(self, account: Account) -> str:
        return account.base_url.rstrip("/") + "/chat/completions"

    def headers(self, key: str) -> dict[str, str]:
        return {}

    def body(self, model: str, request: StoredRequest, slot: SlotFor) -> dict[str, Any]:
        messages = []
        for message in request["messages"]:
            content = message["content"]
            if isinstance(content, list):
                content = [
                    {
                        **part,
                        "image_url": {
                            **part["image_url"],
                            "url": slot(part["image_url"]["url"]).placeholder,
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

    def image_prefix(self, fmt: str) -> str:
        return images.data_url_prefix(fmt)

    def parse_result(self, raw: dict[str, Any]) -> StoredResult:
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


class Messages:
    """Anthropic's messages: system prompts lifted into `system`, image parts turned into
    base64 image blocks, and the answer's usage renamed to OpenAI's words."""

    def url(self, account: Account) -> str:
        return account.anthropic_base_url.rstrip("/") + "/v1/messages"

    def headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}

    def body(self, model: str, request: StoredRequest, slot: SlotFor) -> dict[str, Any]:
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
                    self._image_block(slot(part["image_url"]["url"]))
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

    @staticmethod
    def _image_block(slot: ImageSlot) -> dict[str, Any]:
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": images.mime_type(slot.format),
                "data": slot.placeholder,
            },
        }

    def image_prefix(self, fmt: str) -> str:
        return ""

    def parse_result(self, raw: dict[str, Any]) -> StoredResult:
        blocks = raw["content"]
        thinking = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
        usage = dict(raw.get("usage") or {})
        # Anthropic's input_tokens leave out what the prompt cache read or wrote; OpenAI's
        # prompt_tokens count it, with the cached part in prompt_tokens_details.
        cached = int(usage.get("cache_read_input_tokens") or 0)
        written = int(usage.get("cache_creation_input_tokens") or 0)
        prompt = int(usage.get("input_tokens", 0)) + cached + written
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
                "prompt_tokens_details": {"cached_tokens": cached},
            },
            "response": raw,
        }


#: A job's `api` (models.JobRequest.api) to the dialect its upstream call speaks.
DIALECTS: dict[str, Dialect] = {"openai": ChatCompletions(), "anthropic": Messages()}


def dialect_for(api: str) -> Dialect:
    return DIALECTS[api]


def parse_result(api: str, raw: dict[str, Any]) -> StoredResult:
    """The job's `result` from the upstream's answer, the same shape for every dialect; an
    answer that lacks what its dialect promises is a malformed body, worth another try."""
    dialect = dialect_for(api)
    try:
        return dialect.parse_result(raw)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UpstreamRetryable(
            "the upstream answered a malformed body", upstream_status=200, retry_after=None
        ) from None
