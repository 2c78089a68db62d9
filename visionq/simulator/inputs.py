"""Reading a chat request the way MiMo does: its text, its images, and the simulator's directives.

Parsing is split in two on purpose. `parse_chat` only checks the request's structure (cheap, no
image byte is touched), so a fault directive can fail a request before any decoding, the way an
overloaded upstream refuses work early. `load_image` then does what MiMo does to each image:
decode base64 or fetch the URL, sniff the format from the bytes, and read the header for the
size that the token bill is computed from. The image helpers are the service's own
(`visionq.media.images`), so the simulator and the service can never disagree on what an image is.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from visionq import tokens
from visionq.errors import VisionqError
from visionq.media import images
from visionq.settings import MIMO_MAX_IMAGE_BYTES

Api = Literal["openai", "anthropic"]

#: How long fetching one image URL may take, per socket operation and in total.
FETCH_TIMEOUT = 10.0
_FETCH_CHUNK = 64 * 1024
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_DIRECTIVE = re.compile(r"\[sim:(?P<items>[^\]]*)\]")
_STEPS = ("drop", "malformed")  # what a sequence step may be besides a status
_FLAGS = (*_STEPS, "echo_headers")

#: The models MiMo serves (its documentation), the only ones the simulator accepts.
MODELS = ("mimo-v2.5", "mimo-v2-omni")


class SimError(Exception):
    """A refusal the simulator answers with an error body; carries the HTTP status and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}


@dataclass(frozen=True)
class Directives:
    """The `[sim:...]` instructions found in a request's text; None/False means not given."""

    status: int | None = None
    retry_after: float | None = None
    latency: float | None = None
    drop: bool = False
    malformed: bool = False
    #: With a status: put the request's headers in the error message, as a careless
    #: gateway would (the service must scrub its key from what it records).
    echo_headers: bool = False
    slow_body: float | None = None
    fail_first: int | None = None
    #: `sequence=429/500/drop`: the n-th try of one request gets the n-th step, then success.
    sequence: tuple[str, ...] | None = None

    @property
    def fails(self) -> bool:
        """Whether this request asks to be failed (subject to `fail_first`/`sequence`)."""
        return (
            self.drop
            or self.malformed
            or self.status is not None
            or self.fail_first is not None
            or self.sequence is not None
        )


@dataclass(frozen=True)
class ImageRef:
    """An image as the request names it, before any of its bytes are looked at."""

    kind: Literal["base64", "url"]
    value: str  # the base64 string, or the http(s) URL
    mime: str | None  # the declared MIME type (data URLs and Anthropic base64 sources)
    param: str  # where in the request it sits, for error messages


@dataclass(frozen=True)
class Received:
    """An image as MiMo would see it: the bytes' format, size, length and hash."""

    format: str
    width: int
    height: int
    nbytes: int
    sha256: str

    @property
    def tokens(self) -> int:
        return tokens.image_tokens(self.width, self.height)

    def describe(self, number: int) -> str:
        return (
            f"#{number} {self.format} {self.width}x{self.height} {self.nbytes}B "
            f"sha256:{self.sha256[:12]}"
        )


@dataclass
class Chat:
    """What the simulator needs from a request, independent of the API format it came in."""

    model: str
    images: list[ImageRef] = field(default_factory=list)
    user_texts: list[str] = field(default_factory=list)
    text_chars: int = 0  # every text, the system prompt included: the text token estimate
    directive_text: str = ""
    directives: Directives = field(default_factory=Directives)


def _bad(message: str, param: str | None = None) -> SimError:
    return SimError(400, message, param=param)


def parse_chat(api: Api, raw: bytes) -> Chat:
    """Check a request's structure and collect its texts, image references and directives."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if model not in MODELS:
        raise _bad(f"unknown model {model!r}; supported models: {', '.join(MODELS)}", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", param="messages")
    chat = Chat(model=model)
    texts: list[str] = []
    if api == "anthropic":
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _bad("max_tokens is required and must be a positive integer", "max_tokens")
        texts += _system_texts(body.get("system"))
    for m_index, message in enumerate(messages):
        where = f"messages[{m_index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad("each message must be an object with a string role", where)
        role = message["role"]
        if api == "anthropic" and role not in ("user", "assistant"):
            raise _bad(
                "role must be 'user' or 'assistant' (the system prompt is top-level)",
                f"{where}.role",
            )
        for param, part in _parts(message.get("content"), f"{where}.content"):
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _bad("a text part needs a string text", param)
                texts.append(text)
                if role == "user":
                    chat.user_texts.append(text)
            elif api == "openai" and kind == "image_url":
                chat.images.append(_openai_image(part.get("image_url"), param))
            elif api == "anthropic" and kind == "image":
                chat.images.append(_anthropic_image(part.get("source"), param))
            else:
                raise _bad(f"unsupported content part type {kind!r}", param)
    chat.text_chars = sum(len(text) for text in texts)
    chat.directive_text, chat.directives = parse_directives(texts)
    return chat


def _system_texts(system: object) -> list[str]:
    """Anthropic's top-level system prompt: a string, or a list of text blocks."""
    if system is None:
        return []
    if isinstance(system, str):
        return [system]
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        return [b["text"] for b in system]
    raise _bad("system must be a string or a list of text blocks", "system")


def _parts(content: object, where: str) -> list[tuple[str, dict[str, Any]]]:
    """A message's content as (param, part) pairs; a plain string is one text part."""
    if isinstance(content, str):
        return [(where, {"type": "text", "text": content})]
    if not isinstance(content, list) or not content:
        raise _bad("content must be a string or a non-empty list of parts", where)
    parts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise _bad("each content part must be an object", f"{where}[{index}]")
        parts.append((f"{where}[{index}]", part))
    return parts


def _openai_image(image_url: object, param: str) -> ImageRef:
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise _bad("image_url must be an object with a string url", f"{param}.image_url")
    param = f"{param}.image_url.url"
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if not match:
            raise _bad("a data URL must be exactly data:{MIME};base64,{BASE64}", param)
        return ImageRef("base64", match["data"], match["mime"].lower(), param)
    return _url_ref(url, param)


def _anthropic_image(source: object, param: str) -> ImageRef:
    param = f"{param}.source"
    if not isinstance(source, dict):
        raise _bad("an image block needs a source object", param)
    if source.get("type") == "base64":
        mime, data = source.get("media_type"), source.get("data")
        if not isinstance(mime, str) or not isinstance(data, str):
            raise _bad("a base64 source needs string media_type and data", param)
        return ImageRef("base64", data, mime.lower(), f"{param}.data")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return _url_ref(source["url"], f"{param}.url")
    raise _bad("source must be {type: base64, media_type, data} or {type: url, url}", param)


def _url_ref(url: str, param: str) -> ImageRef:
    if not url.startswith(("http://", "https://")):
        raise _bad("an image URL must be http(s) or a data URL", param)
    return ImageRef("url", url, None, param)


def parse_directives(texts: list[str]) -> tuple[str, Directives]:
    """Every `[sim:KEY=VALUE,...]` / `[sim:KEY]` in the texts, merged; later ones win.

    Unknown keys and bad values are a 400 rather than ignored, so a typo in a test's
    directive shows up as a failure instead of a silently normal answer.
    """
    found = [m for text in texts for m in _DIRECTIVE.finditer(text)]
    values: dict[str, Any] = {}
    for match in found:
        for item in filter(None, (i.strip() for i in match["items"].split(","))):
            key, has_value, value = (s.strip() for s in item.partition("="))
            values[key] = _directive_value(key, value if has_value else None)
    return "".join(m.group(0) for m in found), Directives(**values)


def _directive_value(key: str, value: str | None) -> Any:
    if key == "sequence" and value:
        steps = tuple(step.strip() for step in value.split("/"))
        for step in steps:
            if step not in _STEPS and not (step.isdigit() and 400 <= int(step) <= 599):
                raise _bad(f"simulator sequence step {step!r}: an error status, drop or malformed")
        return steps
    if key in _FLAGS:
        if value is not None:
            raise _bad(f"simulator directive {key} takes no value")
        return True
    if value is None or key not in ("status", "retry_after", "latency", "slow_body", "fail_first"):
        raise _bad(f"unknown or incomplete simulator directive {key!r}")
    try:
        number = float(value) if key in ("retry_after", "latency", "slow_body") else int(value)
    except ValueError:
        raise _bad(f"simulator directive {key} needs a number, not {value!r}") from None
    if key == "status" and not 400 <= number <= 599:
        raise _bad("simulator directive status must be an HTTP error status (400-599)")
    if not 0 <= number < float("inf"):
        raise _bad(f"simulator directive {key} must be a non-negative number")
    return number


def load_image(ref: ImageRef) -> Received:
    """Decode or fetch one image and read what MiMo reads: format (from bytes) and size."""
    if ref.kind == "base64":
        if len(ref.value) > MIMO_MAX_IMAGE_BYTES:
            limit = f"the base64 string is over the {MIMO_MAX_IMAGE_BYTES}-byte limit"
            raise SimError(413, limit, param=ref.param)
        try:
            data = images.decode_base64(ref.value)
        except VisionqError as exc:
            raise _bad(exc.message, ref.param) from None
    else:
        data = _fetch(ref.value, ref.param)
    try:
        fmt = images.sniff(data[: images.SNIFF_BYTES])
    except VisionqError as exc:
        raise _bad(exc.message, ref.param) from None
    actual = images.FORMATS[fmt][1]
    if ref.mime is not None and ref.mime != actual:
        raise _bad(
            f"MIME type does not match the image: declared {ref.mime}, the bytes are {actual}",
            ref.param,
        )
    try:
        info = images.probe(io.BytesIO(data))
    except VisionqError as exc:
        raise _bad(exc.message, ref.param) from None
    return Received(fmt, info.width, info.height, len(data), hashlib.sha256(data).hexdigest())


def _fetch(url: str, param: str) -> bytes:
    """GET an image URL as MiMo would: 200 only, at most 50 MB, within the time limit."""
    deadline = time.monotonic() + FETCH_TIMEOUT
    data = bytearray()
    try:
        with requests.get(url, stream=True, timeout=FETCH_TIMEOUT) as response:
            if response.status_code != 200:
                raise _bad(f"could not fetch the image URL: HTTP {response.status_code}", param)
            for chunk in response.iter_content(_FETCH_CHUNK):
                data += chunk
                if len(data) > MIMO_MAX_IMAGE_BYTES:
                    raise _bad(f"the image at the URL is over {MIMO_MAX_IMAGE_BYTES} bytes", param)
                if time.monotonic() > deadline:
                    raise _bad(f"fetching the image URL took over {FETCH_TIMEOUT:g} s", param)
    except requests.RequestException as exc:
        raise _bad(f"could not fetch the image URL: {type(exc).__name__}", param) from None
    return bytes(data)
