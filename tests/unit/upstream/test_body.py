"""The upstream body as each dialect writes it: the job's request translated, and every image's
bytes streamed in at its place, as a data URL (chat completions) or a base64 block
(Anthropic messages)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from visionq.upstream.body import image_ref, write_body

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 5
JPEG = b"\xff\xd8\xff" + b"\x00\x7f\xff" * 300

REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Answer in French."},
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "No lists."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_ref(0), "detail": "high"}},
                {"type": "text", "text": "and \ud800 this one"},
                {"type": "image_url", "image_url": {"url": image_ref(1)}},
            ],
        },
    ],
    "sampling": {"temperature": 0.2, "top_p": 0.9, "stop": "END", "seed": 7},
    "max_completion_tokens": 300,
}


def _written(api: str, request: dict[str, Any] = REQUEST) -> dict[str, Any]:
    blobs = [PNG, JPEG]
    opened: list[int] = []

    def open_image(n: int) -> io.BytesIO:
        opened.append(n)
        return io.BytesIO(blobs[n])

    out = io.BytesIO()
    write_body(
        out,
        api=api,
        model="mimo-v2",
        request=request,
        formats=["png", "jpeg"],
        open_image=open_image,
    )
    assert opened == [0, 1]  # each image read once, in the order of the body
    text = out.getvalue()
    assert text.isascii()  # the lone surrogate went in as an escape
    body: dict[str, Any] = json.loads(text)
    return body


def test_chat_completions_keeps_the_request_and_sends_data_urls() -> None:
    body = _written("openai")
    user = body["messages"][2]["content"]
    assert user[0] == {
        "type": "image_url",
        "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(PNG).decode(),
            "detail": "high",
        },
    }
    assert user[1] == {"type": "text", "text": "and \ud800 this one"}
    assert (
        user[2]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    )
    assert body["messages"][:2] == REQUEST["messages"][:2]  # system prompts stay messages
    assert body["model"] == "mimo-v2"
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (0.2, 0.9, "END", 7)
    assert body["max_completion_tokens"] == 300


def test_anthropic_messages_lift_the_system_prompt_and_send_image_blocks() -> None:
    body = _written("anthropic")
    assert body["system"] == "Answer in French.\n\nBe brief.\nNo lists."
    assert [m["role"] for m in body["messages"]] == ["user"]
    user = body["messages"][0]["content"]
    assert user == [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(PNG).decode(),
            },
        },
        {"type": "text", "text": "and \ud800 this one"},
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/jpeg",
                "data": base64.b64encode(JPEG).decode(),
            },
        },
    ]
    # Only what the messages API takes of the sampling, under its own names.
    assert body["max_tokens"] == 300
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.2, 0.9, ["END"])
    assert "seed" not in body and "stop" not in body


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_defaults_when_the_request_leaves_them_out(api: str) -> None:
    request = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_ref(1)}}]}
        ]
    }
    body = _written_one(api, request)
    assert "system" not in body
    if api == "anthropic":
        assert body["max_tokens"] == 4096
    else:
        assert "max_completion_tokens" not in body


def _written_one(api: str, request: dict[str, Any]) -> dict[str, Any]:
    out = io.BytesIO()
    write_body(
        out,
        api=api,
        model="m",
        request=request,
        formats=["png", "jpeg"],
        open_image=lambda n: io.BytesIO([PNG, JPEG][n]),
    )
    body: dict[str, Any] = json.loads(out.getvalue())
    return body
