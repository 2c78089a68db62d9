"""The upstream simulator over real HTTP: what it validates, what it answers, how it fails.

The service's own tests trust the simulator to stand in for MiMo, so these pin down the
contract they rely on: the answer names the exact bytes received, in order; the token
usage follows MiMo's formula; every fault directive produces the failure it promises.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from PIL import Image

from tests.support import CORPUS, data_url
from tests.support.servers import serving, wsgi_server
from visionq import cli, tokens
from visionq.settings import MIMO_MAX_IMAGE_BYTES
from visionq.simulator import UNLIMITED, RateLimits, SimAccount, create_app

KEY = "sim-unit-key"
AUTH = {"api-key": KEY}
PNG = CORPUS / "good" / "hopper.png"
JPEG = CORPUS / "good" / "hopper.jpg"
TIFF = CORPUS / "other" / "hopper.tif"
OPENAI = "/v1/chat/completions"
ANTHROPIC = "/anthropic/v1/messages"


def running(app: Flask) -> AbstractContextManager[str]:
    """The app on a free loopback port in a background thread; yields its base URL."""
    return serving(wsgi_server(app))


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running(create_app(api_key=KEY, limits=UNLIMITED)) as url:
        yield url


@pytest.fixture
def own_sim() -> Iterator[str]:
    """A simulator of the test's own: its key's prompt cache has seen no image yet."""
    with running(create_app(api_key=KEY, limits=UNLIMITED)) as url:
        yield url


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    with requests.Session() as http:
        return http.post(url, json=body, headers=AUTH if headers is None else headers, timeout=60)


def _chat(text: str, *urls: str, model: str = "mimo-v2.5", system: str = "") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": [*parts, {"type": "text", "text": text}]})
    return {"model": model, "messages": messages, "max_completion_tokens": 64}


def _saw(path: Path) -> str:
    """How the simulator should name this file, computed independently with Pillow."""
    data = path.read_bytes()
    with Image.open(path) as image:
        fmt = image.format.lower() if image.format else "?"
        size = f"{image.width}x{image.height}"
    return f"{fmt} {size} {len(data)}B sha256:{hashlib.sha256(data).hexdigest()[:12]}"


def _formula(path: Path) -> int:
    with Image.open(path) as image:
        return tokens.image_tokens(image.width, image.height)


def _error(response: requests.Response, status: int, needle: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == str(status)
    assert needle.lower() in error["message"].lower()
    return error


def test_a_png_data_url_is_named_and_billed_like_mimo(own_sim: str) -> None:
    body = _chat("describe it", data_url(PNG), system="You are MiMo.")
    response = _post(own_sim + OPENAI, body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Simulator"] == "visionq"
    answer = response.json()
    assert set(answer) == {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    }
    assert (answer["object"], answer["model"]) == ("chat.completion", "mimo-v2.5")
    assert answer["system_fingerprint"] == "visionq-simulator"
    [choice] = answer["choices"]
    assert (choice["index"], choice["finish_reason"]) == (0, "stop")
    message = choice["message"]
    content, reasoning = message["content"], message["reasoning_content"]
    assert content == f"simulator saw 1 image(s): #1 {_saw(PNG)}. text: describe it"
    assert reasoning == "simulated reasoning over 1 image(s)"
    assert (message["role"], message["tool_calls"]) == ("assistant", None)
    usage = answer["usage"]
    image_tokens = _formula(PNG)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "image_tokens": image_tokens}
    text_chars = len("You are MiMo.") + len("describe it")
    assert usage["prompt_tokens"] == image_tokens + text_chars // 4 + 1
    assert usage["completion_tokens"] == len(content) // 4 + len(reasoning) // 4
    assert usage["completion_tokens_details"] == {"reasoning_tokens": len(reasoning) // 4}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_two_images_arrive_in_order(sim: str) -> None:
    response = _post(sim + OPENAI, _chat("compare", data_url(JPEG), data_url(PNG)))
    assert response.status_code == 200, response.text
    answer = response.json()
    content = answer["choices"][0]["message"]["content"]
    assert content.startswith("simulator saw 2 image(s): ")
    assert f"#1 {_saw(JPEG)}; #2 {_saw(PNG)}. text: compare" in content
    assert answer["usage"]["prompt_tokens_details"]["image_tokens"] == _formula(JPEG) + _formula(
        PNG
    )


def test_image_urls_are_fetched_and_unfetchable_ones_refused(sim: str, image_server: str) -> None:
    response = _post(sim + OPENAI, _chat("url", f"{image_server}/good/hopper.jpg"))
    assert response.status_code == 200, response.text
    assert f"#1 {_saw(JPEG)}" in response.json()["choices"][0]["message"]["content"]
    missing = _post(sim + OPENAI, _chat("url", f"{image_server}/good/missing.png"))
    _error(missing, 400, "could not fetch")
    tiff = _post(sim + OPENAI, _chat("url", f"{image_server}/other/hopper.tif"))
    _error(tiff, 400, "not an accepted image format")


def test_keys_are_checked(sim: str) -> None:
    wrong = _post(sim + OPENAI, _chat("x", data_url(PNG)), {"api-key": "not-the-key"})
    error = _error(wrong, 401)
    assert error["type"] == "authentication_error"
    assert "not-the-key" not in wrong.text
    _error(_post(sim + OPENAI, _chat("x", data_url(PNG)), {}), 401, "missing")
    bearer = _post(sim + OPENAI, _chat("x", data_url(PNG)), {"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200, bearer.text


def test_without_a_configured_key_any_key_but_none_is_accepted() -> None:
    with running(create_app(api_key=None)) as url:
        assert _post(url + OPENAI, _chat("x"), {"api-key": "anything"}).status_code == 200
        _error(_post(url + OPENAI, _chat("x"), {}), 401)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_chat("x") | {"model": "gpt-4o"}, "unknown model"),
        ({"model": "mimo-v2.5", "messages": []}, "messages"),
        (["not", "an", "object"], "json object"),
    ],
)
def test_malformed_requests_are_400(sim: str, body: Any, needle: str) -> None:
    error = _error(_post(sim + OPENAI, body), 400, needle)
    assert error["type"] == "invalid_request_error"


def test_a_declared_mime_must_match_the_bytes(sim: str) -> None:
    response = _post(sim + OPENAI, _chat("x", data_url(PNG, "image/jpeg")))
    _error(response, 400, "MIME type does not match the image")


def test_a_tiff_is_refused(sim: str) -> None:
    _error(_post(sim + OPENAI, _chat("x", data_url(TIFF, "image/tiff"))), 400, "not an accepted")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("data:image/png;base64,iVBOR w0KGgo=", "base64"),
        ("data:image/png,iVBORw0KGgo=", "data URL"),
    ],
)
def test_bad_data_urls_are_400(sim: str, url: str, needle: str) -> None:
    _error(_post(sim + OPENAI, _chat("x", url)), 400, needle)


def test_a_base64_string_over_50_mb_is_413(sim: str) -> None:
    url = "data:image/png;base64," + "A" * (MIMO_MAX_IMAGE_BYTES + 4)
    _error(_post(sim + OPENAI, _chat("x", url)), 413, "limit")


def test_over_the_context_length_is_400(sim: str) -> None:
    text = "x" * (262_144 * 4)  # one token over mimo-v2-omni's window with the + 1
    _error(_post(sim + OPENAI, _chat(text, model="mimo-v2-omni")), 400, "context length")
    assert _post(sim + OPENAI, _chat(text, model="mimo-v2.5")).status_code == 200


def test_anthropic_round_trip(own_sim: str) -> None:
    body = {
        "model": "mimo-v2-omni",
        "max_tokens": 128,
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": base64.b64encode(JPEG.read_bytes()).decode(),
                        },
                    },
                    {"type": "text", "text": "what is it"},
                ],
            }
        ],
    }
    response = _post(own_sim + ANTHROPIC, body, {"x-api-key": KEY})
    assert response.status_code == 200, response.text
    assert response.headers["X-Simulator"] == "visionq"
    answer = response.json()
    assert (answer["type"], answer["role"], answer["model"]) == (
        "message",
        "assistant",
        "mimo-v2-omni",
    )
    assert answer["stop_reason"] == "end_turn"
    thinking, text = answer["content"]
    assert thinking == {
        "type": "thinking",
        "signature": "sim",
        "thinking": "simulated reasoning over 1 image(s)",
    }
    assert text == {
        "type": "text",
        "text": f"simulator saw 1 image(s): #1 {_saw(JPEG)}. text: what is it",
    }
    chars = len("Be brief.") + len("what is it")
    assert answer["usage"] == {
        "input_tokens": _formula(JPEG) + chars // 4 + 1,
        "cache_read_input_tokens": 0,
        "output_tokens": len(text["text"]) // 4 + len(thinking["thinking"]) // 4,
    }
    missing = _post(own_sim + ANTHROPIC, {k: v for k, v in body.items() if k != "max_tokens"})
    _error(missing, 400, "max_tokens")
    assert missing.json()["type"] == "error"


def test_anthropic_url_sources_are_fetched(sim: str, image_server: str) -> None:
    body = {
        "model": "mimo-v2.5",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "url", "url": f"{image_server}/good/hopper.png"},
                    },
                ],
            }
        ],
    }
    response = _post(sim + ANTHROPIC, body)
    assert response.status_code == 200, response.text
    assert f"#1 {_saw(PNG)}" in response.json()["content"][1]["text"]


@pytest.mark.parametrize(
    ("status", "extra", "retry_after"),
    [
        (429, "", "1"),
        (429, ",retry_after=3", "3"),
        (503, "", "1"),
        (503, ",retry_after=0", "0"),
    ],
)
def test_429_and_503_carry_retry_after(sim: str, status: int, extra: str, retry_after: str) -> None:
    response = _post(sim + OPENAI, _chat(f"go [sim:status={status}{extra}]", data_url(PNG)))
    _error(response, status, "simulated")
    assert response.headers["Retry-After"] == retry_after


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 421, 500])
def test_status_directives_on_both_endpoints(sim: str, status: int) -> None:
    response = _post(sim + OPENAI, _chat(f"[sim:status={status}]", data_url(PNG)))
    _error(response, status, "simulated")
    assert "Retry-After" not in response.headers
    body = {
        "model": "mimo-v2.5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": f"[sim:status={status}]"}],
    }
    anthropic = _post(sim + ANTHROPIC, body)
    _error(anthropic, status, "simulated")
    assert anthropic.json()["type"] == "error"


def test_drop_closes_the_connection_without_an_answer(sim: str) -> None:
    with pytest.raises(requests.ConnectionError):
        _post(sim + OPENAI, _chat("[sim:drop]", data_url(PNG)))
    assert _post(sim + OPENAI, _chat("after the drop", data_url(PNG))).status_code == 200


def test_malformed_is_a_200_that_is_not_json(sim: str) -> None:
    response = _post(sim + OPENAI, _chat("[sim:malformed]", data_url(PNG)))
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_fail_first_fails_the_same_body_n_times_then_answers(sim: str) -> None:
    body = _chat("retry me [sim:fail_first=2,retry_after=0]", data_url(PNG))
    statuses = [_post(sim + OPENAI, body).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    other = _chat("someone else [sim:fail_first=2,retry_after=0]", data_url(PNG))
    assert _post(sim + OPENAI, other).status_code == 503  # its own count


def test_fail_first_applies_to_the_given_status(sim: str) -> None:
    body = _chat("[sim:status=429,fail_first=1]", data_url(JPEG))
    assert [_post(sim + OPENAI, body).status_code for _ in range(2)] == [429, 200]


def test_sequence_serves_each_step_in_turn_then_answers(sim: str) -> None:
    body = _chat("[sim:sequence=429/500/drop/malformed,retry_after=2]", data_url(PNG))
    first = _post(sim + OPENAI, body)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert _post(sim + OPENAI, body).status_code == 500
    with pytest.raises(requests.ConnectionError):
        _post(sim + OPENAI, body)
    malformed = _post(sim + OPENAI, body)
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    assert _post(sim + OPENAI, body).json()["choices"][0]["message"]["content"]


def test_a_bad_sequence_step_is_refused(sim: str) -> None:
    assert _post(sim + OPENAI, _chat("[sim:sequence=429/teapot]", data_url(PNG))).status_code == 400


def test_latency_directive_delays_the_answer(sim: str) -> None:
    started = time.monotonic()
    response = _post(sim + OPENAI, _chat("[sim:latency=0.6]", data_url(PNG)))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.6


def test_slow_body_streams_the_json_over_the_given_time(sim: str) -> None:
    with (
        requests.Session() as http,
        http.post(
            sim + OPENAI,
            json=_chat("[sim:slow_body=1]", data_url(PNG)),
            headers=AUTH,
            stream=True,
            timeout=30,
        ) as response,
    ):
        headers_at = time.monotonic()
        assert response.status_code == 200
        answer = response.json()
        body_took = time.monotonic() - headers_at
    assert answer["choices"][0]["message"]["content"].startswith("simulator saw 1 image(s)")
    assert body_took >= 0.8  # the headers came first, the pieces of the body over ~1 s


def test_unknown_directives_are_refused(sim: str) -> None:
    _error(_post(sim + OPENAI, _chat("[sim:explode]", data_url(PNG))), 400, "directive")


def test_runtime_latency_config_and_stats() -> None:
    with running(create_app(api_key=KEY)) as url, requests.Session() as http:
        mimo = {"rpm": 100, "tpm": 10_000_000, "concurrency": 0}  # unless told otherwise
        faults: dict[str, Any] = {"revoked": False, "balance": None, "burst_402_over": 0}
        assert http.post(url + "/_sim/config", json={"latency": 0.5}, timeout=10).json() == {
            "latency": 0.5,
            **mimo,
            "accounts": {"default": mimo | faults},
        }
        started = time.monotonic()
        assert _post(url + OPENAI, _chat("slow", data_url(PNG))).status_code == 200
        assert time.monotonic() - started >= 0.5
        http.post(url + "/_sim/config", json={"latency": 0}, timeout=10).close()
        _error(_post(url + OPENAI, _chat("x"), {"api-key": "wrong"}), 401)
        _error(_post(url + OPENAI, _chat("[sim:status=503]")), 503)
        with pytest.raises(requests.ConnectionError):
            _post(url + OPENAI, _chat("[sim:drop]"))
        bad = http.post(url + "/_sim/config", json={"latency": -1}, timeout=10)
        assert bad.status_code == 400
        stats = http.get(url + "/_sim/stats", timeout=10).json()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 1, "401": 1, "503": 1, "dropped": 1}
    assert stats["rate_limited"] == 0
    assert stats["peak_rpm"] == 3  # admitted: past the key check


def test_requests_over_the_per_minute_limit_are_429_with_retry_after() -> None:
    with running(create_app(api_key=KEY, limits=RateLimits(rpm=2))) as url:
        assert _post(url + OPENAI, _chat("one")).status_code == 200
        assert _post(url + OPENAI, _chat("two", model="mimo-v2-omni")).status_code == 200
        assert _post(url + OPENAI, _chat("three")).status_code == 200
        refused = _post(url + OPENAI, _chat("four"))
        five = {
            "model": "mimo-v2.5",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "5"}],
        }
        anthropic = _post(url + ANTHROPIC, five, {"x-api-key": KEY})
        stats = requests.get(url + "/_sim/stats", timeout=10).json()
    _error(refused, 429, needle="rate limit reached for mimo-v2.5")
    assert 55 <= int(refused.headers["Retry-After"]) <= 60  # when the window has room again
    assert anthropic.status_code == 429  # one budget per model, whichever endpoint
    assert stats["rate_limited"] == 2
    assert stats["peak_rpm"] == 3  # admitted requests over both models
    assert stats["per_minute"] == [3]


def test_tokens_per_minute_are_counted_from_the_images() -> None:
    png_tokens = _formula(PNG) + len("x") // 4 + 1
    limits = RateLimits(tpm=2 * png_tokens)
    with running(create_app(api_key=KEY, limits=limits)) as url:
        assert _post(url + OPENAI, _chat("x", data_url(PNG))).status_code == 200
        assert _post(url + OPENAI, _chat("x", data_url(PNG))).status_code == 200
        _error(_post(url + OPENAI, _chat("x", data_url(PNG))), 429)


def _admitted(url: str) -> bool:
    """The simulator has let a call in (counted against its limits); it is in flight
    until it answers, which `requests` only counts once it has."""
    stats = requests.get(url + "/_sim/stats", timeout=10).json()
    return stats["first_admitted"] is not None and stats["requests"] == 0


def test_calls_in_flight_over_the_concurrency_cap_are_429() -> None:
    with running(create_app(api_key=KEY, limits=RateLimits(concurrency=1))) as url:
        slow = threading.Thread(target=_post, args=(url + OPENAI, _chat("[sim:latency=2]")))
        slow.start()
        deadline = time.monotonic() + 10
        while not _admitted(url):
            assert time.monotonic() < deadline, "the slow call was never let in"
            time.sleep(0.01)
        refused = _post(url + OPENAI, _chat("meanwhile"))
        in_flight_throughout = slow.is_alive()
        slow.join()
        after = _post(url + OPENAI, _chat("after"))
    assert in_flight_throughout  # else the refusal below would not be about the slow call
    assert refused.status_code == 429
    assert after.status_code == 200


def test_limits_can_be_changed_at_run_time() -> None:
    with running(create_app(api_key=KEY, limits=UNLIMITED)) as url:
        bad = requests.post(url + "/_sim/config", json={"rpm": 5, "burst": 1}, timeout=10)
        good = requests.post(url + "/_sim/config", json={"rpm": 1}, timeout=10).json()
        assert _post(url + OPENAI, _chat("one")).status_code == 200
        _error(_post(url + OPENAI, _chat("two")), 429)
    assert bad.status_code == 400
    limits = {"rpm": 1, "tpm": 0, "concurrency": 0}
    faults: dict[str, Any] = {"revoked": False, "balance": None, "burst_402_over": 0}
    assert good == {"latency": 0, **limits, "accounts": {"default": limits | faults}}


# Several accounts: MiMo limits and bills an account (all its keys together), and caches
# prompts per key.

A1, A2, B1 = "account-a-key-1", "account-a-key-2", "account-b-key-1"
ALL_KEYS = (A1, A2, B1)


def _accounts(a: RateLimits = UNLIMITED, b: RateLimits = UNLIMITED) -> list[SimAccount]:
    return [SimAccount("a", (A1, A2), a), SimAccount("b", (B1,), b)]


def _as(key: str) -> dict[str, str]:
    return {"api-key": key}


def _config(url: str, **body: Any) -> dict[str, Any]:
    response = requests.post(url + "/_sim/config", json=body, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = requests.get(url + "/_sim/stats", timeout=10).json()
    return stats


def _anthropic(path: Path, media_type: str, model: str = "mimo-v2.5") -> dict[str, Any]:
    image = base64.b64encode(path.read_bytes()).decode()
    source = {"type": "base64", "media_type": media_type, "data": image}
    content = [{"type": "image", "source": source}, {"type": "text", "text": "hi"}]
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": content}]}


def test_two_accounts_have_their_own_windows() -> None:
    limits = RateLimits(rpm=1, tpm=0)
    with running(create_app(accounts=_accounts(limits, limits))) as url:
        assert _post(url + OPENAI, _chat("a one"), _as(A1)).status_code == 200
        refused = _post(url + OPENAI, _chat("a two"), _as(A1))
        other = _post(url + OPENAI, _chat("b one"), _as(B1))
        stats = _stats(url)
    _error(refused, 429, "rate limit reached for mimo-v2.5")
    assert other.status_code == 200, other.text
    assert stats["accounts"]["a"]["rate_limited"] == 1
    assert stats["accounts"]["b"]["rate_limited"] == 0
    assert stats["rate_limited"] == 1


def test_two_keys_of_one_account_share_its_window() -> None:
    with running(create_app(accounts=_accounts(RateLimits(rpm=2, tpm=0)))) as url:
        assert _post(url + OPENAI, _chat("one"), _as(A1)).status_code == 200
        bearer = {"Authorization": f"Bearer {A2}"}
        assert _post(url + OPENAI, _chat("two"), bearer).status_code == 200
        refused = [_post(url + OPENAI, _chat("three"), _as(key)) for key in (A1, A2)]
        stats = _stats(url)["accounts"]["a"]
    for response in refused:
        _error(response, 429, "rate limit")
    assert stats["by_status"] == {"200": 2, "429": 2}
    assert (stats["peak_rpm"], stats["rate_limited"]) == (2, 2)


def test_a_revoked_account_is_401_until_it_is_restored() -> None:
    with running(create_app(accounts=_accounts())) as url:
        config = _config(url, account="a", revoked=True)
        revoked = [_post(url + OPENAI, _chat("x"), _as(key)) for key in (A1, A2)]
        anthropic = _post(url + ANTHROPIC, _anthropic(PNG, "image/png"), {"x-api-key": A1})
        other = _post(url + OPENAI, _chat("x"), _as(B1))
        _config(url, account="a", revoked=False)
        restored = _post(url + OPENAI, _chat("x"), _as(A2))
        stats = _stats(url)["accounts"]
    assert config["accounts"]["a"]["revoked"] is True
    assert config["accounts"]["b"]["revoked"] is False
    for response in [*revoked, anthropic]:
        assert _error(response, 401, "invalid API key")["type"] == "authentication_error"
    assert anthropic.json()["type"] == "error"
    assert (other.status_code, restored.status_code) == (200, 200)
    assert stats["a"]["by_status"] == {"401": 3, "200": 1}


def _cost(answer: dict[str, Any]) -> int:
    usage = answer["usage"]
    return int(usage["prompt_tokens"] + usage["completion_tokens"])


def test_a_spent_balance_is_402_insufficient_funds() -> None:
    with running(create_app(accounts=_accounts())) as url:
        assert _config(url, account="a", balance=1)["accounts"]["a"]["balance"] == 1
        first = _post(url + OPENAI, _chat("x", data_url(PNG)), _as(A1))
        assert first.status_code == 200, first.text
        spent = _post(url + OPENAI, _chat("x"), _as(A2))
        anthropic = _post(url + ANTHROPIC, _anthropic(PNG, "image/png"), {"x-api-key": A1})
        other = _post(url + OPENAI, _chat("x"), _as(B1))
        balance = _config(url)["accounts"]["a"]["balance"]
        _config(url, account="a", balance=None)
        unlimited = _post(url + OPENAI, _chat("x"), _as(A1))
        _config(url, account="b", balance=0)
        nothing_left = _post(url + OPENAI, _chat("x"), _as(B1))
    error = _error(spent, 402, "Insufficient account funds")
    assert error["type"] == "billing_error"
    assert _error(anthropic, 402, "Insufficient account funds")["type"] == "billing_error"
    assert balance == 1 - _cost(first.json())  # the 402s took nothing
    _error(nothing_left, 402, "Insufficient account funds")
    assert (other.status_code, unlimited.status_code) == (200, 200)


def _in_flight(url: str, account: str, calls: int) -> None:
    """Wait until `calls` requests of the account are let in and none has answered."""
    deadline = time.monotonic() + 10
    while True:
        stats = _stats(url)["accounts"][account]
        if sum(stats["per_minute"]) == calls and stats["requests"] == 0:
            return
        assert time.monotonic() < deadline, "the slow calls were never let in"
        time.sleep(0.01)


def test_a_burst_over_burst_402_over_is_402_instead_of_429() -> None:
    statuses: list[int] = []

    def slow(key: str) -> None:
        statuses.append(_post(url + OPENAI, _chat("[sim:latency=2]"), _as(key)).status_code)

    with running(create_app(accounts=_accounts())) as url:
        _config(url, account="a", burst_402_over=2)
        callers = [threading.Thread(target=slow, args=(key,)) for key in (A1, A2)]
        for caller in callers:
            caller.start()
        _in_flight(url, "a", 2)
        over = _post(url + OPENAI, _chat("one more", model="mimo-v2-omni"), _as(A1))
        other = _post(url + OPENAI, _chat("another account"), _as(B1))
        during = _stats(url)["accounts"]["a"]
        in_flight_throughout = all(caller.is_alive() for caller in callers)
        for caller in callers:
            caller.join()
        after = _post(url + OPENAI, _chat("after"), _as(A1))
    assert in_flight_throughout  # else the 402 would not be about the calls in flight
    assert _error(over, 402, "Insufficient account funds")["type"] == "billing_error"
    assert "Retry-After" not in over.headers  # nothing says it was a rate limit
    assert (during["per_minute"], during["rate_limited"]) == ([2], 0)  # not admitted
    assert statuses == [200, 200]
    assert (other.status_code, after.status_code) == (200, 200)


def _openai_usage(answer: dict[str, Any]) -> dict[str, int]:
    usage = answer["usage"]
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"],
        "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
        "image_tokens": usage["prompt_tokens_details"]["image_tokens"],
    }


def _sum(usages: list[dict[str, int]]) -> dict[str, int]:
    return {name: sum(usage[name] for usage in usages) for name in usages[0]}


def test_stats_count_per_account_and_total_the_answers_usage() -> None:
    with running(create_app(accounts=_accounts())) as url:
        sent = [
            ("a", A1, _chat("one", data_url(PNG))),
            ("a", A1, _chat("one again", data_url(PNG))),  # cached
            ("a", A2, _chat("two", data_url(JPEG), model="mimo-v2-omni")),
            ("b", B1, _chat("three", data_url(PNG), data_url(JPEG), system="Be brief.")),
        ]
        answers: dict[str, list[dict[str, int]]] = {"a": [], "b": []}
        by_model: dict[str, list[dict[str, int]]] = {"mimo-v2.5": [], "mimo-v2-omni": []}
        for account, key, body in sent:
            response = _post(url + OPENAI, body, _as(key))
            assert response.status_code == 200, response.text
            answers[account].append(_openai_usage(response.json()))
            if account == "a":
                by_model[body["model"]].append(_openai_usage(response.json()))
        anthropic = _post(url + ANTHROPIC, _anthropic(JPEG, "image/jpeg"), {"x-api-key": B1})
        _error(_post(url + OPENAI, _chat("[sim:status=503]"), _as(B1)), 503)
        _error(_post(url + OPENAI, _chat("x"), _as("nobody's key")), 401)
        stats_response = requests.get(url + "/_sim/stats", timeout=10)
        config_response = requests.get(url + "/_sim/config", timeout=10)
    usage = anthropic.json()["usage"]
    answers["b"].append(
        {
            "prompt_tokens": usage["input_tokens"] + usage["cache_read_input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "reasoning_tokens": len("simulated reasoning over 1 image(s)") // 4,
            "cached_tokens": usage["cache_read_input_tokens"],
            "image_tokens": _formula(JPEG),
        }
    )
    stats = stats_response.json()
    assert answers["a"][1]["cached_tokens"] == _formula(PNG) > 0
    assert answers["b"][-1]["cached_tokens"] == _formula(JPEG)  # B1 sent it before
    assert stats["usage"] == _sum(answers["a"] + answers["b"])
    a, b = stats["accounts"]["a"], stats["accounts"]["b"]
    assert a["usage"] == _sum(answers["a"])
    assert b["usage"] == _sum(answers["b"])
    assert a["usage_by_model"] == {model: _sum(usages) for model, usages in by_model.items()}
    assert list(b["usage_by_model"]) == ["mimo-v2.5"]
    assert (a["requests"], a["by_status"], a["peak_rpm"], a["per_minute"]) == (
        3,
        {"200": 3},
        3,
        [3],
    )
    assert (b["requests"], b["by_status"], b["rate_limited"]) == (3, {"200": 2, "503": 1}, 0)
    assert a["limits"] == b["limits"] == {"rpm": 0, "tpm": 0, "concurrency": 0}
    assert stats["requests"] == 7  # the unknown key's too, which no account counts
    assert stats["by_status"] == {"200": 5, "503": 1, "401": 1}
    for text in (stats_response.text, config_response.text):
        assert not any(key in text for key in ALL_KEYS)


def test_the_prompt_cache_is_per_key() -> None:
    png, jpeg = _formula(PNG), _formula(JPEG)
    with running(create_app(accounts=_accounts())) as url:

        def cached(key: str, *paths: Path) -> int:
            body = _chat("look", *(data_url(path) for path in paths))
            response = _post(url + OPENAI, body, _as(key))
            assert response.status_code == 200, response.text
            return int(response.json()["usage"]["prompt_tokens_details"]["cached_tokens"])

        assert cached(A1, PNG) == 0
        assert cached(A1, PNG) == png
        assert cached(A1, JPEG, PNG) == png  # only the image it had sent before
        assert cached(A2, PNG) == 0  # another key of the same account: its own cache
        assert cached(B1, PNG) == 0
        too_long = _chat("x" * (262_144 * 4), data_url(JPEG), model="mimo-v2-omni")
        _error(_post(url + OPENAI, too_long, _as(B1)), 400, "context length")
        assert cached(B1, JPEG) == 0  # the refused prompt was never read, so never cached
        anthropic = _post(url + ANTHROPIC, _anthropic(JPEG, "image/jpeg"), {"x-api-key": A1})
    usage = anthropic.json()["usage"]
    assert usage["cache_read_input_tokens"] == jpeg
    assert usage["input_tokens"] == len("hi") // 4 + 1  # the image came from the cache


def test_config_sets_one_account_or_every_one_and_refuses_what_it_cannot() -> None:
    with running(create_app(accounts=_accounts())) as url, requests.Session() as http:
        everyone = _config(url, rpm=7, latency=0)
        only_b = _config(url, account="b", tpm=9, balance=100, burst_402_over=3)
        bodies: list[dict[str, Any]] = [
            {"account": "c", "rpm": 1},
            {"account": "a", "latency": 1},
            {"account": "a", "revoked": "yes"},
            {"account": "a", "balance": -1},
            {"account": 1},
            {"revoked": True},
        ]
        refusals = [http.post(url + "/_sim/config", json=body, timeout=10) for body in bodies]
        after = http.get(url + "/_sim/config", timeout=10).json()
    faults = {"revoked": False, "balance": None, "burst_402_over": 0}
    assert everyone == {
        "latency": 0,
        "rpm": 7,
        "tpm": 0,
        "concurrency": 0,
        "accounts": {
            "a": {"rpm": 7, "tpm": 0, "concurrency": 0, **faults},
            "b": {"rpm": 7, "tpm": 0, "concurrency": 0, **faults},
        },
    }
    assert only_b["accounts"]["b"] == {
        "rpm": 7,
        "tpm": 9,
        "concurrency": 0,
        "revoked": False,
        "balance": 100,
        "burst_402_over": 3,
    }
    assert only_b["accounts"]["a"] == everyone["accounts"]["a"]
    unknown, *others = refusals
    assert "unknown account; the accounts are a, b" in _error(unknown, 400)["message"]
    _error(others[0], 400, '{"account": name')
    _error(others[1], 400, "revoked must be true or false")
    _error(others[2], 400, "balance must be a finite number >= 0")
    _error(others[3], 400, '{"account": name')
    _error(others[4], 400, '{"latency": s')
    assert after == only_b  # a refused body changes nothing


def test_accounts_must_not_share_keys_or_names() -> None:
    key_twice = [SimAccount("a", (A1,), UNLIMITED), SimAccount("b", (B1, A1), UNLIMITED)]
    with pytest.raises(ValueError, match="repeats a key of 'a'") as repeated:
        create_app(accounts=key_twice)
    assert A1 not in str(repeated.value)
    with pytest.raises(ValueError, match="given twice"):
        create_app(accounts=[SimAccount("a", (A1,), UNLIMITED), SimAccount("a", (B1,), UNLIMITED)])
    with pytest.raises(ValueError, match="the accounts' own"):
        create_app(api_key=KEY, accounts=_accounts())
    with pytest.raises(ValueError, match="non-empty keys"):
        SimAccount("a", A1, UNLIMITED)  # type: ignore[arg-type]  # a string, not a tuple
    assert A1 not in repr(_accounts())


def test_account_options_become_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr("visionq.simulator.serve", lambda *args, **kwargs: served.append(kwargs))
    accounts = ["--account", "a=k1+k2:rpm=5:concurrency=2", "--account", "b=k==3"]
    assert cli.main(["simulator", *accounts, "--tpm", "7"]) == 0
    assert cli.main(["simulator", "--api-key", "k", "--rpm", "3"]) == 0
    with_accounts, without = served
    assert with_accounts["accounts"] == [
        SimAccount("a", ("k1", "k2"), RateLimits(rpm=5, tpm=7, concurrency=2)),
        SimAccount("b", ("k==3",), RateLimits(rpm=100, tpm=7, concurrency=0)),
    ]
    assert (with_accounts["api_key"], with_accounts["limits"]) == (None, None)
    assert (without["accounts"], without["api_key"]) == (None, "k")
    assert without["limits"] == RateLimits(rpm=3)


@pytest.mark.parametrize(
    "argv",
    [
        ["--account", "s3cret"],
        ["--account", "=s3cret"],
        ["--account", "a=s3cret+"],
        ["--account", "a=s3cret:rpm"],
        ["--account", "a=s3cret:rpm=-1"],
        ["--account", "a=s3cret:burst=1"],
        ["--account", "a=s3cret:rpm=1:rpm=2"],
        ["--api-key", "s3cret", "--account", "a=s3cret"],
    ],
)
def test_a_bad_account_option_is_a_usage_error_that_hides_the_key(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["simulator", *argv])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "argument --account" in error
    assert "s3cret" not in error
