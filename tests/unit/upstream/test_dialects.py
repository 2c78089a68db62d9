"""A job's `result` has one shape whichever API answered it; an answer that lacks what its
API promises is a malformed body, retried like a 5xx."""

from __future__ import annotations

from typing import Any

import pytest

from visionq.accounts import MAIN, Accounts
from visionq.errors import UpstreamRetryable
from visionq.settings import Settings
from visionq.upstream.dialects import dialect_for, parse_result


def test_a_chat_completion_becomes_the_result() -> None:
    raw = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {"role": "assistant", "content": "A cat.", "reasoning_content": "fur"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 70, "completion_tokens": 3},
    }
    assert parse_result("openai", raw) == {
        "content": "A cat.",
        "reasoning_content": "fur",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 70, "completion_tokens": 3, "total_tokens": 73},
        "response": raw,
    }


def test_a_chat_completion_keeps_the_upstream_total_and_reads_null_content_as_empty() -> None:
    raw = {
        "choices": [{"message": {"content": None}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 9},
    }
    result = parse_result("openai", raw)
    assert (result["content"], result["reasoning_content"]) == ("", None)
    assert result["usage"]["total_tokens"] == 9


def test_an_anthropic_message_becomes_the_same_shape() -> None:
    raw = {
        "id": "msg_1",
        "content": [
            {"type": "thinking", "thinking": "whiskers, "},
            {"type": "text", "text": "A "},
            {"type": "thinking", "thinking": "a tail"},
            {"type": "text", "text": "cat."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 70, "output_tokens": 3, "cache_read_input_tokens": 20},
    }
    assert parse_result("anthropic", raw) == {
        "content": "A cat.",
        "reasoning_content": "whiskers, a tail",
        "finish_reason": "end_turn",
        # Anthropic's input_tokens leave out what the cache read; OpenAI's words count it.
        "usage": {
            "input_tokens": 70,
            "output_tokens": 3,
            "cache_read_input_tokens": 20,
            "prompt_tokens": 90,
            "completion_tokens": 3,
            "total_tokens": 93,
            "prompt_tokens_details": {"cached_tokens": 20},
        },
        "response": raw,
    }


def test_an_anthropic_message_without_thinking_has_no_reasoning() -> None:
    raw = {"content": [{"type": "text", "text": "ok"}], "stop_reason": "max_tokens"}
    result = parse_result("anthropic", raw)
    assert result["reasoning_content"] is None
    assert result["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


@pytest.mark.parametrize(
    ("api", "raw"),
    [
        ("openai", {}),
        ("openai", {"choices": []}),
        ("openai", {"choices": [{"message": "text"}]}),
        ("anthropic", {}),
        ("anthropic", {"content": "text"}),
        ("anthropic", {"content": [], "usage": {"input_tokens": "many"}}),
    ],
)
def test_a_malformed_answer_is_retryable(api: str, raw: dict[str, Any]) -> None:
    with pytest.raises(UpstreamRetryable, match="malformed body") as raised:
        parse_result(api, raw)
    assert raised.value.upstream_status == 200


def test_each_dialect_has_its_endpoint_and_headers() -> None:
    settings = Settings(
        upstream_base_url="https://mimo.example/v1/",
        upstream_anthropic_base_url="https://mimo.example/anthropic/",
    )
    account = Accounts.from_settings(settings).get(MAIN)
    openai, anthropic = dialect_for("openai"), dialect_for("anthropic")
    assert openai.url(account) == "https://mimo.example/v1/chat/completions"
    assert anthropic.url(account) == "https://mimo.example/anthropic/v1/messages"
    assert openai.headers("k") == {}
    assert anthropic.headers("k") == {"x-api-key": "k", "anthropic-version": "2023-06-01"}
