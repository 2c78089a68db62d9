"""A batch input's lines: reading them one at a time, and each line as a job request.

Pure (no Redis, no storage): the validator and the admitter both read the input through
`read_lines` and turn each line into a `JobRequest` with `parse_line`, so a line is
judged the same way when it is checked and when it becomes a job.

Two line shapes, one per API. OpenAI's batch input, a line of the JSONL file:
`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`, where the
body is what `POST /v1/jobs` takes in OpenAI form (plus `max_tokens`, the older name of
`max_completion_tokens`, which batch files written for OpenAI use). Anthropic's Message
Batches request, kept one per line by the API: `{"custom_id", "params": {...Messages
body...}}`, translated here to the same request with `api: "anthropic"`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from pydantic import ValidationError

from visionq.models import JobRequest

#: OpenAI's and Anthropic's caps on one batch.
MAX_LINES = 50_000
ENDPOINT = "/v1/chat/completions"
#: OpenAI's documented bound on a custom_id is none; Anthropic's is 64 characters of
#: `[a-zA-Z0-9_-]`. Ours: Anthropic's rule for Anthropic batches, 512 characters for OpenAI's.
MAX_CUSTOM_ID_CHARS = 512
ANTHROPIC_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Fields of a job body that belong to the batch, not to a line.
_BATCH_ONLY = ("webhook", "api")


class LineError(Exception):
    """A line that breaks the rules, as OpenAI's `errors.data[]` item reports it."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Line:
    """One request of the input: its line number in what was read (1-based, blank lines
    counted, for error reports), its place among the requests (`index`, 1-based, blank
    lines not counted: what a batch admits by), its bytes, and the offset after it."""

    number: int
    index: int
    raw: bytes
    end: int


def read_lines(
    stream: IO[bytes], *, start: int = 0, first: int = 1, max_bytes: int
) -> Iterator[Line]:
    """The input's requests (non-blank lines) from byte offset `start`, where request
    `first` begins, one at a time: the file is never held whole. A line longer than
    `max_bytes` is a `LineError` (read no further than the cap)."""
    offset, number, index = start, 0, first
    while True:
        raw = stream.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise LineError("line_too_long", f"line {number} is over {max_bytes} bytes")
        offset += len(raw)
        if raw.strip():
            yield Line(number, index, raw, offset)
            index += 1


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise LineError("invalid_json_line", "this line is not a JSON object") from None
    if not isinstance(value, dict):
        raise LineError("invalid_json_line", "this line is not a JSON object")
    return value


def _request(body: dict[str, Any], *, prefix: str) -> JobRequest:
    try:
        return JobRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise LineError("invalid_request", first["msg"], f"{prefix}{where}") from None


def custom_id_of(raw: bytes) -> str:
    """The custom_id of a line already validated (for the lines a batch never ran)."""
    return str(_object(raw).get("custom_id", ""))


def parse_openai(raw: bytes) -> tuple[str, JobRequest]:
    line = _object(raw)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("missing_required_parameter", "custom_id must be a string", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        raise LineError(
            "invalid_request", f"custom_id is over {MAX_CUSTOM_ID_CHARS} characters", "custom_id"
        )
    if line.get("method") != "POST":
        raise LineError("invalid_method", 'method must be "POST"', "method")
    if line.get("url") != ENDPOINT:
        raise LineError("invalid_url", f"url must be {ENDPOINT!r}, the batch's endpoint", "url")
    unknown = set(line) - {"custom_id", "method", "url", "body"}
    if unknown:
        name = sorted(unknown)[0]
        raise LineError("invalid_request", f"unknown field {name!r}", name)
    body = line.get("body")
    if not isinstance(body, dict):
        raise LineError("missing_required_parameter", "body must be a JSON object", "body")
    for name in _BATCH_ONLY:
        if name in body:
            raise LineError(
                "invalid_request", f"{name} is set on the batch, not a line", f"body.{name}"
            )
    if body.get("stream"):
        raise LineError("invalid_request", "a batch line cannot stream", "body.stream")
    body = {k: v for k, v in body.items() if k != "stream"}
    if "max_tokens" in body:
        if "max_completion_tokens" in body:
            raise LineError(
                "invalid_request",
                "give max_tokens or max_completion_tokens, not both",
                "body.max_tokens",
            )
        body["max_completion_tokens"] = body.pop("max_tokens")
    return custom_id, _request(body, prefix="body")


def _anthropic_image(source: Any, where: str) -> str:
    if not isinstance(source, dict):
        raise LineError("invalid_request", "an image block needs a source", where)
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise LineError("invalid_request", "a base64 source needs media_type and data", where)
        return f"data:{media};base64,{data}"
    if kind == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    if kind == "file" and isinstance(source.get("file_id"), str):
        return str(source["file_id"])
    raise LineError("invalid_request", "an image source is base64, url or file", where)


def _anthropic_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise LineError("invalid_request", "content is a string or a list of blocks", where)
    parts: list[dict[str, Any]] = []
    for n, block in enumerate(content):
        at = f"{where}[{n}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            url = _anthropic_image(block.get("source"), f"{at}.source")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise LineError("invalid_request", "a content block is text or image", at)
    return parts


#: Messages body fields and the job request's names for them.
_ANTHROPIC_FIELDS = {
    "model": "model",
    "max_tokens": "max_completion_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop_sequences": "stop",
    "thinking": "thinking",
}


def parse_anthropic(raw: bytes) -> tuple[str, JobRequest]:
    line = _object(raw)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not ANTHROPIC_CUSTOM_ID.fullmatch(custom_id):
        raise LineError(
            "invalid_request", "custom_id is 1 to 64 letters, digits, _ or -", "custom_id"
        )
    params = line.get("params")
    if not isinstance(params, dict):
        raise LineError("invalid_request", "params must be a JSON object", "params")
    unknown = set(params) - set(_ANTHROPIC_FIELDS) - {"messages", "system"}
    if unknown:
        name = sorted(unknown)[0]
        raise LineError("invalid_request", f"unknown field {name!r}", f"params.{name}")
    if "max_tokens" not in params:
        raise LineError("invalid_request", "max_tokens is required", "params.max_tokens")
    messages: list[dict[str, Any]] = []
    system = params.get("system")
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    if system is not None:
        messages.append({"role": "system", "content": system})
    given = params.get("messages")
    if not isinstance(given, list) or not given:
        raise LineError("invalid_request", "messages must be a non-empty list", "params.messages")
    for n, message in enumerate(given):
        where = f"params.messages[{n}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise LineError("invalid_request", "a message's role is user or assistant", where)
        content = _anthropic_content(message.get("content"), f"{where}.content")
        messages.append({"role": message["role"], "content": content})
    body: dict[str, Any] = {"messages": messages, "api": "anthropic"}
    for name, ours in _ANTHROPIC_FIELDS.items():
        if name in params:
            body[ours] = params[name]
    return custom_id, _request(body, prefix="params")


def parse_line(api: str, raw: bytes) -> tuple[str, JobRequest]:
    """A line as (custom_id, request), or `LineError`."""
    return parse_anthropic(raw) if api == "anthropic" else parse_openai(raw)
