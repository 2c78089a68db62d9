"""What the fuzzers found, each kept as one fixed request that reproduces it.

A bug still open is a strict xfail naming it; once fixed, the XPASS fails the run, and
then the mark goes. The fuzzers excuse no 5xx, so while a 5xx bug is open their run fails
too. The bugs fixed since (BUG-1 to BUG-10) stay here as plain regression tests.
"""

from __future__ import annotations

import base64
import io
import json
import socket

import pytest
import requests
from PIL import Image
from urllib3 import encode_multipart_formdata

from tests.fuzz.contract import error_problems
from tests.support import KEYS, Stack

AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG")
    return out.getvalue()


PNG = _tiny_png()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def _post_json(stack: Stack, path: str, raw: str | bytes) -> requests.Response:
    headers = {**AUTH, "Content-Type": "application/json"}
    return requests.post(f"{stack.base_url}{path}", data=raw, headers=headers, timeout=30)


def _post_multipart(stack: Stack, parts: list[tuple[str, object]]) -> requests.Response:
    body, content_type = encode_multipart_formdata(parts)
    headers = {**AUTH, "Content-Type": content_type}
    return requests.post(f"{stack.base_url}/v1/jobs", data=body, headers=headers, timeout=30)


def _assert_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert not error_problems(response), error_problems(response)


# BUG-1 (fixed): `upload:<n>` with an n that str.isdigit() accepts and int() does not (a
# superscript digit, or over 4,300 digits) was 500: visionq/intake.py checked isdigit()
# and then called int().
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/tokens"])
@pytest.mark.parametrize("index", ["²", "1" * 4301], ids=["superscript", "4301-digits"])
def test_upload_index_that_is_no_int_is_400(stack: Stack, path: str, index: str) -> None:
    body = {"prompt": "x", "images": [f"upload:{index}"]}
    _assert_error(_post_json(stack, path, json.dumps(body)), 400)


def test_upload_index_that_is_no_int_in_multipart_is_400(stack: Stack) -> None:
    part = {"type": "image_url", "image_url": {"url": "upload:²"}}
    request = {"messages": [{"role": "user", "content": [part]}]}
    response = _post_multipart(
        stack, [("image", ("a.png", PNG, "image/png")), ("request", json.dumps(request))]
    )
    _assert_error(response, 400)


# BUG-2 (fixed): an image or webhook URL that urllib.parse refuses ("http://[::1/x":
# "Invalid IPv6 URL"; "http://[zzz]/": not an address) raised ValueError in
# visionq/media/urlfetch.py `check_url_syntax`: 500.
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/tokens"])
@pytest.mark.parametrize("url", ["http://[::1/x.png", "http://[zzz]/x.png"])
def test_image_url_urllib_refuses_is_400(stack: Stack, path: str, url: str) -> None:
    _assert_error(_post_json(stack, path, json.dumps({"prompt": "x", "images": [url]})), 400)


def test_webhook_url_urllib_refuses_is_400(stack: Stack) -> None:
    body = {"prompt": "x", "images": [DATA_URL], "webhook": {"url": "http://[::1/hook"}}
    _assert_error(_post_json(stack, "/v1/jobs", json.dumps(body)), 400)


def test_webhook_url_urllib_refuses_in_multipart_is_400(stack: Stack) -> None:
    response = _post_multipart(
        stack, [("image", ("a.png", PNG, "image/png")), ("webhook_url", "http://[::1/hook")]
    )
    _assert_error(response, 400)


# BUG-3 (fixed): JSON nested about 1,000 deep made json.loads raise RecursionError, which
# the intake did not catch: 500. Nested about 950 to 975 deep, it passed the API and then
# failed its job as `internal` in the prepare worker ("stopped its worker 3 times").
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/tokens"])
@pytest.mark.parametrize("depth", [100_000, 960])
def test_deeply_nested_body_is_400(stack: Stack, path: str, depth: int) -> None:
    raw = json.dumps({"prompt": "x", "images": [DATA_URL], "response_format": {"a": 1}})
    raw = raw.replace('{"a": 1}', '{"a": ' + "[" * depth + "]" * depth + "}")
    _assert_error(_post_json(stack, path, raw), 400)
    _assert_error(_post_json(stack, path, "[" * depth), 400)


def test_deeply_nested_request_field_is_400(stack: Stack) -> None:
    response = _post_multipart(
        stack, [("image", ("a.png", PNG, "image/png")), ("request", "[" * 5000)]
    )
    _assert_error(response, 400)


# BUG-4 (fixed): GET /v1/jobs?limit=² was 500 (isdigit() then int() again).
def test_list_limit_that_is_no_int_is_400(stack: Stack) -> None:
    response = requests.get(
        f"{stack.base_url}/v1/jobs", params={"limit": "²"}, headers=AUTH, timeout=30
    )
    _assert_error(response, 400)


# BUG-5 (fixed): requests gunicorn refuses before Flask sees them (a request line over
# 4,094 bytes: 414; a header over 8,190 bytes or more than 100 headers: 431) got
# gunicorn's HTML page, not the JSON error body.
@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"x": "a" * 5000}, {}, 414),
        ({}, {"Idempotency-Key": "k" * 9000}, 431),
        ({}, {f"X-Filler-{i}": "v" for i in range(120)}, 431),
    ],
    ids=["long-url", "long-header", "many-headers"],
)
def test_errors_gunicorn_answers_are_json(
    stack: Stack, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    response = requests.post(
        f"{stack.base_url}/v1/jobs",
        params=params,
        json={"prompt": "x", "images": [DATA_URL]},
        headers={**AUTH, **headers},
        timeout=30,
    )
    _assert_error(response, status)


# BUG-6 (fixed): a 405 had no `Allow` header (RFC 9110: MUST; Schemathesis's
# `unsupported_method` check): the error handler dropped the exception's headers.
@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/v1/jobs"), ("GET", "/v1/tokens"), ("TRACE", "/v1/jobs/job_x/cancel")],
)
def test_405_names_the_allowed_methods(stack: Stack, method: str, path: str) -> None:
    response = requests.request(method, f"{stack.base_url}{path}", headers=AUTH, timeout=30)
    _assert_error(response, 405)
    assert "Allow" in response.headers


# BUG-7 (fixed): an error answered before the body is read (401 for a missing key; 400 for
# a bad Content-Type or Prefer header) to a request whose body is over 64 KiB said
# `Connection: keep-alive`, and then gunicorn's gthread worker, which drains at most 64 KiB
# of an unread body, closed the connection: the client's next request on it failed
# (RemoteDisconnected or a broken pipe). gunicorn drops a `Connection` header the app sets;
# service/uploads.py `body_deadline` now answers such a response with `Connection: close`
# through gunicorn's own `force_close`, so the client knows not to reuse the connection.
def _raw_exchange(stack: Stack, head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send one request, read its answer, then ask /healthz on the same connection."""
    host, port = stack.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "no answer to the first request"
            answer += chunk
        headers, _, rest = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in headers.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: visionq\r\n\r\n")
            second = sock.recv(65536)
        except OSError as exc:
            second = repr(exc).encode()
    return headers, second


@pytest.mark.parametrize(
    "head",
    [
        "POST /v1/jobs HTTP/1.1\r\nHost: visionq\r\nContent-Type: application/json\r\n",
        f"POST /v1/jobs HTTP/1.1\r\nHost: visionq\r\nAuthorization: Bearer {KEYS['alice']}\r\n"
        "Content-Type: text/plain\r\n",
        f"POST /v1/jobs HTTP/1.1\r\nHost: visionq\r\nAuthorization: Bearer {KEYS['alice']}\r\n"
        "Content-Type: application/json\r\nPrefer: wait=99\r\n",
    ],
    ids=["401-no-key", "400-content-type", "400-prefer"],
)
def test_an_early_error_to_a_large_body_keeps_its_keep_alive_word(stack: Stack, head: str) -> None:
    headers, second = _raw_exchange(stack, head, b"x" * 200_000)
    status_line = headers.split(b"\r\n")[0]
    assert status_line.split()[1] in (b"400", b"401"), status_line
    if b"connection: close" not in headers.lower():
        assert second.startswith(b"HTTP/1.1 200"), (status_line, second[:80])


# BUG-8 (fixed): with an Idempotency-Key, a body whose strings hold a lone surrogate (JSON's
# "\ud800" escape, which json.loads accepts, or its raw bytes) was 500: service/jobs_api.py
# `_fingerprint` dumped the request with pydantic's model_dump_json, which raised
# PydanticSerializationError ("surrogates not allowed"). Without the header the same body
# was accepted (202).
@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("bug-8-escaped", b'{"prompt": "\\ud800", "images": ["http://127.0.0.1:9/x.png"]}'),
        (
            "bug-8-raw-bytes",
            b'{"prompt": "x", "images": ["http://127.0.0.1:9/x.png"], '
            b'"metadata": {"k": "\xed\xa0\x80"}}',
        ),
    ],
    ids=["escaped", "raw-bytes"],
)
def test_idempotent_submit_with_a_lone_surrogate_is_no_5xx(
    stack: Stack, key: str, raw: bytes
) -> None:
    headers = {**AUTH, "Content-Type": "application/json", "Idempotency-Key": key}
    response = requests.post(f"{stack.base_url}/v1/jobs", data=raw, headers=headers, timeout=30)
    assert response.status_code in (202, 400), (response.status_code, response.text[:200])
    if response.status_code == 400:
        _assert_error(response, 400)


# BUG-9 (fixed): the OpenAPI document declared, for no /v1 operation, statuses any /v1
# request can get: 429 (API.md's per-tenant request limit), and 414 and 431 (a request
# line or headers over gunicorn's limits, answered with the JSON error body). Schemathesis
# reported them as "undocumented status code" (ST103). Each /v1 operation now declares
# all three (a `default` or `4XX` response with the ErrorResponse schema would do as well).
def test_openapi_declares_what_every_request_can_get(stack: Stack) -> None:
    document = requests.get(f"{stack.base_url}/openapi.json", timeout=30).json()
    missing = [
        f"{method.upper()} {path}: {status}"
        for path, operations in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in operations.items()
        for status in ("414", "429", "431")
        if not {status, "4XX", "default"} & set(operation["responses"])
    ]
    assert not missing, missing


# BUG-10 (fixed): a multipart part from which Werkzeug reads no field name (a
# Content-Disposition with no `name`, or one it cannot parse: `name="\"`, `name="a\"`,
# which urllib3 and browsers send for a field named `\` or `a\`) was filed under the key
# None; next to another unknown field or file, or a `request` field, service/jobs_api.py
# `parse_job_request` sorted names that mix None and str: TypeError, 500.
@pytest.mark.parametrize(
    "parts",
    [
        [b'name="x"', b'name="\\"'],
        [b'name="x"', b""],
        [b'name="x"; filename="a.png"', b'filename="b.png"'],
        [b'name="request"', b'name="api"', b'name="a\\"'],
    ],
    ids=["backslash-name", "no-name", "nameless-file", "beside-request"],
)
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/tokens"])
def test_a_nameless_multipart_part_is_400(stack: Stack, path: str, parts: list[bytes]) -> None:
    body = b"".join(
        b"--xyz\r\nContent-Disposition: form-data" + (b"; " + p if p else b"") + b"\r\n\r\n"
        b'{"prompt": "x"}\r\n'
        for p in parts
    )
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"}
    response = requests.post(
        f"{stack.base_url}{path}", data=body + b"--xyz--\r\n", headers=headers, timeout=30
    )
    _assert_error(response, 400)
