"""The upstream client at its boundary: what it sends and how answers map to errors."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator

import pytest
import requests

from visionq.accounts import MAIN, Account, Accounts
from visionq.errors import ContextLengthExceeded, UpstreamBadRequest, UpstreamRetryable
from visionq.settings import Settings
from visionq.upstream.client import UpstreamClient, retry_after_seconds

KEY = "sk-very-secret-upstream-key"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from the class's `answer`; records every request's headers."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(dict(self.headers))
        status, headers, body = type(self).answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(answer: tuple[int, dict[str, str], bytes]) -> tuple[str, type[_Recorder], object]:
    handler = type("Handler", (_Recorder,), {"answer": answer, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", handler, server


@pytest.fixture
def servers() -> Iterator[list]:
    started: list = []
    yield started
    for _, _, server in started:
        server.shutdown()
        server.server_close()


def _client(base: str) -> tuple[UpstreamClient, Account]:
    settings = Settings(upstream_base_url=f"{base}/v1", mimo_api_key=KEY, upstream_timeout=5)
    return UpstreamClient(settings), Accounts.from_settings(settings).get(MAIN)


def _call(client: tuple[UpstreamClient, Account]) -> dict:
    upstream, account = client
    return upstream.call(account, "openai", io.BytesIO(b"{}"), 2)


def test_a_redirect_is_not_followed_and_the_key_stays_home(servers: list) -> None:
    elsewhere = _serve((200, {}, b"{}"))
    servers.append(elsewhere)
    redirecting = _serve((307, {"Location": f"{elsewhere[0]}/steal"}, b""))
    servers.append(redirecting)
    with pytest.raises(UpstreamBadRequest) as raised:
        _call(_client(redirecting[0]))
    assert raised.value.upstream_status == 307
    assert redirecting[1].seen[0]["api-key"] == KEY
    assert elsewhere[1].seen == []


def test_an_error_that_echoes_the_key_is_scrubbed(servers: list) -> None:
    echo = _serve((400, {}, b'{"error": {"message": "bad key sk-very-secret-upstream-key"}}'))
    servers.append(echo)
    with pytest.raises(UpstreamBadRequest) as raised:
        _call(_client(echo[0]))
    assert KEY not in raised.value.message
    assert "[redacted]" in raised.value.message


def test_context_length_keeps_the_upstream_status(servers: list) -> None:
    too_long = _serve((400, {}, b'{"error": {"message": "exceeds the context length"}}'))
    servers.append(too_long)
    with pytest.raises(ContextLengthExceeded) as raised:
        _call(_client(too_long[0]))
    assert raised.value.to_dict()["upstream_status"] == 400


def test_429_carries_retry_after(servers: list) -> None:
    limited = _serve((429, {"Retry-After": "7"}, b'{"error": {"message": "slow down"}}'))
    servers.append(limited)
    with pytest.raises(UpstreamRetryable) as raised:
        _call(_client(limited[0]))
    assert raised.value.retry_after == 7.0
    assert raised.value.upstream_status == 429


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


class _Answering(requests.adapters.BaseAdapter):
    """A transport that records each request and answers 200 with a JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"ok": true}'
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("api", "url", "extra"),
    [
        ("openai", "http://mimo.test/v1/chat/completions", {}),
        (
            "anthropic",
            "http://mimo.test/anthropic/v1/messages",
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        ),
    ],
)
def test_each_api_is_posted_to_its_endpoint_with_its_headers(
    api: str, url: str, extra: dict[str, str]
) -> None:
    transport = _Answering()
    session = requests.Session()
    session.mount("http://", transport)
    settings = Settings(
        upstream_base_url="http://mimo.test/v1",
        upstream_anthropic_base_url="http://mimo.test/anthropic",
        mimo_api_key=KEY,
    )
    account = Accounts.from_settings(settings).get(MAIN)
    answer = UpstreamClient(settings, session=session).call(account, api, io.BytesIO(b"{}"), 2)
    assert answer == {"ok": True}
    [sent] = transport.sent
    assert (sent.method, sent.url) == ("POST", url)
    headers = {name.lower(): value for name, value in sent.headers.items()}
    expected = {
        "content-type": "application/json",
        "content-length": "2",
        "api-key": KEY,
        "authorization": f"Bearer {KEY}",
        **{name.lower(): value for name, value in extra.items()},
    }
    assert {name: headers.get(name) for name in expected} == expected
    assert ("x-api-key" in headers) == (api == "anthropic")
