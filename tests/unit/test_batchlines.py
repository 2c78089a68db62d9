"""A batch input's lines: read one at a time, and each judged as the job API would."""

from __future__ import annotations

import io
import json

import pytest

from visionq import batchlines
from visionq.batchlines import LineError, parse_anthropic, parse_openai, read_lines


def _line(**overrides: object) -> bytes:
    line: dict[str, object] = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "mimo-v2.5",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        {"type": "text", "text": "describe"},
                    ],
                }
            ],
            "max_tokens": 64,
        },
    }
    line.update(overrides)
    return json.dumps(line).encode()


def test_lines_are_numbered_as_written_and_indexed_as_requests() -> None:
    data = b'{"a":1}\n\n{"b":2}\n{"c":3}'
    lines = list(read_lines(io.BytesIO(data), max_bytes=100))
    assert [(ln.number, ln.index) for ln in lines] == [(1, 1), (3, 2), (4, 3)]
    assert lines[1].end == len(b'{"a":1}\n\n{"b":2}\n')
    # Reading on from a line's end gives the rest, indexed from where the batch is.
    rest = list(
        read_lines(io.BytesIO(data[lines[1].end :]), start=lines[1].end, first=3, max_bytes=100)
    )
    assert [(ln.index, ln.raw, ln.end) for ln in rest] == [(3, b'{"c":3}', len(data))]


def test_a_line_over_the_cap_is_refused_without_reading_it_all() -> None:
    with pytest.raises(LineError) as found:
        list(read_lines(io.BytesIO(b"x" * 1000 + b"\n"), max_bytes=100))
    assert found.value.code == "line_too_long"


def test_an_openai_line_becomes_the_job_request_it_carries() -> None:
    custom_id, request = parse_openai(_line())
    assert custom_id == "a"
    assert request.max_completion_tokens == 64  # OpenAI's older name, as batch files use it
    assert request.api == "openai" and request.messages is not None


@pytest.mark.parametrize(
    ("line", "code", "param"),
    [
        (b"not json", "invalid_json_line", None),
        (b"[1]", "invalid_json_line", None),
        (_line(custom_id=""), "missing_required_parameter", "custom_id"),
        (_line(method="GET"), "invalid_method", "method"),
        (_line(url="/v1/embeddings"), "invalid_url", "url"),
        (_line(extra=1), "invalid_request", "extra"),
        (
            _line(body={"messages": [], "webhook": {"url": "https://x"}}),
            "invalid_request",
            "body.webhook",
        ),
        (_line(body={"messages": []}), "invalid_request", "body.messages"),
        (
            _line(body={"messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
            "invalid_request",
            "body.temperature",
        ),
    ],
)
def test_a_line_that_breaks_the_rules_says_which_rule(
    line: bytes, code: str, param: str | None
) -> None:
    with pytest.raises(LineError) as found:
        parse_openai(line)
    assert (found.value.code, found.value.param) == (code, param)


def test_an_anthropic_request_becomes_an_anthropic_job() -> None:
    raw = json.dumps(
        {
            "custom_id": "req-1",
            "params": {
                "model": "mimo-v2.5",
                "max_tokens": 100,
                "system": [{"type": "text", "text": "be brief"}],
                "stop_sequences": ["END"],
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "AAAA",
                                },
                            },
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x.test/b.jpg"},
                            },
                            {"type": "text", "text": "compare"},
                        ],
                    }
                ],
            },
        }
    ).encode()
    custom_id, request = parse_anthropic(raw)
    assert custom_id == "req-1" and request.api == "anthropic"
    assert request.max_completion_tokens == 100 and request.stop == ["END"]
    assert request.messages is not None
    system, user = (m.model_dump() for m in request.messages)
    assert system == {"role": "system", "content": "be brief"}
    urls = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    assert urls == ["data:image/png;base64,AAAA", "https://x.test/b.jpg"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "params.max_tokens"),
        ({"max_tokens": 5, "messages": []}, "params.messages"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "params.messages[0]"),
        (
            {"max_tokens": 5, "tools": [], "messages": [{"role": "user", "content": "x"}]},
            "params.tools",
        ),
    ],
)
def test_an_anthropic_request_that_breaks_the_rules(params: dict[str, object], param: str) -> None:
    with pytest.raises(LineError) as found:
        parse_anthropic(json.dumps({"custom_id": "r", "params": params}).encode())
    assert found.value.param == param


def test_anthropic_custom_ids_keep_anthropics_rule() -> None:
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(LineError):
        parse_anthropic(json.dumps({"custom_id": "has space", "params": body}).encode())
    assert (
        batchlines.parse_line(
            "anthropic", json.dumps({"custom_id": "ok_1-2", "params": body}).encode()
        )[0]
        == "ok_1-2"
    )
