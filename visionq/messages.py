"""The request's messages as the intake handles them: normalised to OpenAI's shape (plain
fields and uploads become parts), and walked for the text the client wrote. Pure
functions of the validated request, shared by submit and the token count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from visionq.models import JobRequest

#: How a multipart request's message refers to its n-th uploaded file: `upload:<n>`.
UPLOAD_PREFIX = "upload:"


def normalise_messages(request: JobRequest, n_uploads: int) -> list[dict[str, Any]]:
    """The request as OpenAI messages, with uploads nobody referred to placed before the text."""
    if request.messages is not None:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
    else:
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": url}} for url in request.images or []
        ]
        if request.prompt is not None:
            parts.append({"type": "text", "text": request.prompt})
        messages = [{"role": "user", "content": parts}]
        if request.system is not None:
            messages.insert(0, {"role": "system", "content": request.system})
    referred = {
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    }
    unreferred = [
        {"type": "image_url", "image_url": {"url": f"{UPLOAD_PREFIX}{n}"}}
        for n in range(n_uploads)
        if f"{UPLOAD_PREFIX}{n}" not in referred
    ]
    if unreferred:
        _place_before_text(messages, unreferred)
    return messages


def _place_before_text(messages: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        messages.append({"role": "user", "content": parts})
        return
    last = users[-1]
    content = last["content"]
    if isinstance(content, str):
        last["content"] = [*parts, {"type": "text", "text": content}]
        return
    first_text = next((i for i, p in enumerate(content) if p["type"] == "text"), len(content))
    content[first_text:first_text] = parts


def text_fields(
    messages: list[dict[str, Any]], sampling: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    """What `Intake.check_text` counts, as (param, value): everything the client wrote
    except the chat format's own parts (a message's role, a part's type, the names of the
    format's keys) and the images' URLs. A key the format does not name is the client's
    text too, and is counted with its value (as a one-key object)."""
    for m, message in enumerate(messages):
        for key, value in message.items():
            where = f"messages[{m}].{key}"
            if key == "role":
                continue
            if key != "content":
                yield f"messages[{m}]", {key: value}
            elif isinstance(value, str):
                yield where, value
            else:
                for p, part in enumerate(value):
                    yield from _part_fields(f"{where}[{p}]", part)
    yield from sampling.items()


def _part_fields(where: str, part: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in part.items():
        if key == "type":
            continue
        if key == "text":
            yield f"{where}.text", value
        elif key == "image_url" and part["type"] == "image_url":
            for name, detail in value.items():
                if name != "url":
                    yield f"{where}.image_url", {name: detail}
        else:
            yield where, {key: value}
