"""Property-based fuzzing of the submit endpoints, over real HTTP against the running stack.

`POST /v1/jobs` and `POST /v1/tokens` get JSON bodies in both forms (the shorthand and
OpenAI `messages`), raw bytes that are barely JSON, and multipart bodies, each either
valid or a valid body with a few fields made hostile. The property, for every answer:
no 5xx at all, a status the endpoint documents, and
for an error the JSON error body of API.md; a success is a job (or a token count).

Accepted jobs run for real, so the images are tiny and every http(s) image URL that could
be fetched points at 127.0.0.1's discard port, which refuses at once (the test stack
allows private URLs).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from urllib3 import encode_multipart_formdata

from tests.fuzz.contract import DERANDOMIZE, Tally
from tests.support import KEYS, Stack
from visionq.models import Job, TokenCount

JOBS = "/v1/jobs"
TOKENS = "/v1/tokens"
#: What each endpoint may answer, from API.md and the OpenAPI document (5xx aside).
ALLOWED = {
    JOBS: {200, 201, 202, 400, 401, 409, 413, 415, 422, 429, 503},
    TOKENS: {200, 400, 401, 413, 415, 422, 429, 503},
}
# A failing example is shown through `describe` (cut short); Hypothesis's own repr of a
# multi-megabyte body only warns that it is large, which pytest here makes an error.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)
UNREACHABLE = "http://127.0.0.1:9/x.png"  # the discard port: connection refused at once
HOOK = "http://127.0.0.1:9/hook"


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in `n` draws (Hypothesis's small integers come up far more often)."""
    return st.sampled_from([False] * (n - 1) + [True])


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # `tally` is made once per test, on purpose
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# ---- images ----


def _encode(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "teal").save(out, fmt)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature and an IHDR chunk: the header the intake probes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


TINY = {
    "png": _encode("PNG", (4, 3), "RGBA"),
    "jpeg": _encode("JPEG", (5, 4)),
    "gif": _encode("GIF", (3, 3), "P"),
    "bmp": _encode("BMP", (2, 2)),
    "webp": _encode("WEBP", (6, 2)),
}
ODD_BYTES = {
    "empty": b"",
    "bomb": _png_header(100_000, 100_000),  # over the pixel cap: 422 at intake
    "zero-size": _png_header(0, 0),
    "header-only": _png_header(8, 8),  # probes fine, fails the worker's decode
    "truncated-jpeg": TINY["jpeg"][: len(TINY["jpeg"]) // 2],
    "tiff": b"II*\x00" + bytes(60),
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    "html": b"<html><body>not an image</body></html>",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{_b64(data)}"


VALID_DATA_URLS = [data_url(data, f"image/{fmt}") for fmt, data in TINY.items()]
image_bytes = st.one_of(
    st.sampled_from(list(TINY.values())),
    st.sampled_from(list(ODD_BYTES.values())),
    st.binary(max_size=256),
    st.builds(
        lambda magic, rest: magic + rest,
        st.sampled_from(
            [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]
        ),
        st.binary(max_size=64),
    ),
)
mimes = st.one_of(
    st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"]),
    st.sampled_from(["image/tiff", "text/plain", "application/octet-stream", "image/svg+xml"]),
    st.just(""),
    st.text(max_size=15),
)


@st.composite
def bad_data_urls(draw: st.DrawFn) -> str:
    """Data URLs that are wrong in one way: MIME, base64, shape or bytes."""
    data = draw(image_bytes)
    kind = draw(st.sampled_from(["mime", "bytes", "junk-base64", "spaces", "padding", "shape"]))
    if kind == "mime":
        return f"data:{draw(mimes)};base64,{_b64(data)}"
    if kind == "bytes":
        return data_url(data)
    if kind == "junk-base64":
        return "data:image/png;base64," + draw(st.text(max_size=40))
    encoded = _b64(draw(st.sampled_from(list(TINY.values()))))
    if kind == "spaces":
        at = draw(st.integers(0, len(encoded)))
        return (
            "data:image/png;base64,"
            + encoded[:at]
            + draw(st.sampled_from([" ", "\n", "\t", "%20"]))
            + encoded[at:]
        )
    if kind == "padding":
        return (
            "data:image/png;base64,"
            + encoded.rstrip("=")
            + draw(st.sampled_from(["", "=", "===", "A"]))
        )
    prefix = draw(
        st.sampled_from(
            [
                "data:",
                "data:,",
                "data:image/png,",
                "data:;base64,",
                "data:image/png;base64",
                "data:image/png;charset=utf-8;base64,",
                "DATA:image/png;base64,",
                "data:image/png;BASE64,",
                "data:image/png;base64,data:image/png;base64,",
            ]
        )
    )
    return prefix + encoded


HOSTILE_URLS = [
    "http://",
    "http:///x.png",
    "https://",
    "http://[::1]:9/x.png",
    "http://[::1/x.png",
    "http://[zzz]/x.png",
    "http://127.0.0.1:99999/x.png",
    "http://127.0.0.1:-1/x.png",
    "http://user:pw@127.0.0.1:9/x.png",
    "http://127.0.0.1:9/" + "a" * 9000,
    "http://xn--/x.png",
    "http://例え.テスト/x.png",
    "http://127.0.0.1:9/%00%ff/..%2f..%2fetc/passwd",
    "ftp://127.0.0.1/x.png",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://127.0.0.1:9/_",
    "//127.0.0.1:9/x.png",
    "HTTP://127.0.0.1:9/x.png",
    " http://127.0.0.1:9/x.png",
    "http://127.0.0.1:9/x.png\n",
    "\x00",
    "",
]
http_urls = st.one_of(
    st.just(UNREACHABLE),
    st.sampled_from(HOSTILE_URLS),
    st.builds(lambda path: f"http://127.0.0.1:9/{path}", st.text(max_size=30)),
    st.builds(
        lambda scheme, rest: scheme + rest,
        st.sampled_from(["http://", "https://", "ftp://", "data:", "upload:", ""]),
        st.text(max_size=30),
    ),
)
upload_refs = st.builds(
    lambda index: f"upload:{index}",
    st.one_of(
        st.integers(0, 5).map(str),
        st.sampled_from(["", "-1", "01", " 1", "1.0", "0x1", "²", "٣", "1" * 4301, "9" * 30]),
        st.text(max_size=6),
    ),
)
#: Mostly images that work (the job then runs for real), else everything else.
good_images = st.one_of(st.sampled_from(VALID_DATA_URLS), st.just(UNREACHABLE))
any_image = st.one_of(good_images, bad_data_urls(), http_urls, upload_refs, st.text(max_size=20))

# ---- values ----

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Mn"]), max_size=20),
    st.sampled_from(
        ["", " ", "\x00", "\u202e", "\U0001d518\U0001d52b", "ﷺ" * 50, "\ufeff", "null", "{}"]
    ),
    st.integers(1_000, 300_000).map(lambda n: "ꙮ" * n),  # large, multi-byte
)
#: Lone surrogates: JSON can carry them escaped; as raw UTF-8 they are invalid bytes.
json_text = st.one_of(odd_text, st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**40), 10**40),
    st.floats(),  # NaN and infinities included: Python's json writes and reads them
    st.text(max_size=20),
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
metadata_ok = st.dictionaries(st.text(max_size=64), st.text(max_size=60), max_size=16)
metadata_bad = st.one_of(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=17, max_size=20),
    st.builds(lambda k: {k: "v"}, st.text(min_size=65, max_size=70)),
    st.builds(lambda v: {"k": v}, st.text(min_size=513, max_size=520)),
    st.dictionaries(st.text(max_size=8), junk, min_size=1, max_size=3),
    junk,
)
webhook_ok = st.just({"url": HOOK})
webhook_bad = st.one_of(
    st.builds(lambda url: {"url": url}, http_urls),
    st.just({"url": "http://127.0.0.1:9/" + "h" * 3000}),
    st.just({"url": HOOK, "secret": "x"}),
    st.just({}),
    junk,
)

#: Each top-level field: (a valid value, a hostile one).
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "model": (st.sampled_from(["mimo-v2.5", "mimo-v2-omni"]), st.one_of(odd_text, junk)),
    "max_completion_tokens": (
        st.integers(1, 4096),
        st.one_of(
            st.integers(max_value=0),
            st.integers(10**18, 10**30),
            st.sampled_from(["12", 1.5, "²", True]),
            junk,
        ),
    ),
    "api": (st.sampled_from(["openai", "anthropic"]), st.one_of(odd_text, junk)),
    "resize": (st.sampled_from(["auto", "never"]), st.one_of(odd_text, junk)),
    "webhook": (webhook_ok, webhook_bad),
    "metadata": (metadata_ok, metadata_bad),
    "temperature": (
        st.floats(0, 2),
        st.one_of(st.floats(), st.sampled_from([-0.1, 2.01, "1"]), junk),
    ),
    "top_p": (st.floats(0, 1), st.one_of(st.floats(), junk)),
    "stop": (st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=4)), junk),
    "presence_penalty": (st.floats(-2, 2), st.one_of(st.floats(), junk)),
    "frequency_penalty": (st.floats(-2, 2), st.one_of(st.floats(), junk)),
    "seed": (st.integers(0, 2**31), st.one_of(st.integers(10**20, 10**40), st.floats(), junk)),
    "response_format": (st.just({"type": "text"}), junk),
    "thinking": (st.just({"type": "disabled"}), junk),
    "user": (st.text(max_size=20), st.one_of(json_text, junk)),
}
SIMPLE_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "prompt": (st.text(max_size=60), st.one_of(json_text, junk)),
    "system": (st.text(max_size=60), st.one_of(json_text, junk)),
    "images": (
        st.lists(good_images, min_size=1, max_size=3),
        st.one_of(
            st.lists(any_image, max_size=5),
            st.just([]),
            st.builds(lambda n, url: [url] * n, st.integers(64, 70), good_images),  # the 64 cap
            st.lists(junk, min_size=1, max_size=3),
            junk,
        ),
    ),
}


# ---- OpenAI messages ----

image_part_ok = st.builds(lambda url: {"type": "image_url", "image_url": {"url": url}}, good_images)
text_part_ok = st.builds(lambda text: {"type": "text", "text": text}, st.text(max_size=40))
part_bad = st.one_of(
    st.builds(lambda url: {"type": "image_url", "image_url": {"url": url}}, any_image),
    st.builds(
        lambda url, extra: {"type": "image_url", "image_url": {"url": url, "detail": extra}},
        good_images,
        junk,
    ),
    st.builds(lambda url: {"type": "image_url", "image_url": url}, good_images),  # a bare string
    st.builds(lambda url: {"type": "image_url", "url": url}, good_images),
    st.just({"type": "image_url", "image_url": {}}),
    st.just({"type": "image_url", "image_url": {"url": ""}}),
    st.builds(lambda t: {"type": t, "text": "x"}, st.one_of(odd_text, junk)),
    st.builds(lambda text, extra: {"type": "text", "text": text, "extra": extra}, odd_text, junk),
    st.builds(lambda text: {"type": "text", "text": text}, st.one_of(odd_text, junk)),
    st.builds(
        lambda data: {"type": "input_audio", "input_audio": {"data": data}}, st.text(max_size=10)
    ),
    junk,
)


@st.composite
def messages(draw: st.DrawFn, hostile: bool) -> list[Any]:
    user_parts = [
        draw(image_part_ok),
        *draw(st.lists(st.one_of(image_part_ok, text_part_ok), max_size=3)),
    ]
    msgs: list[Any] = [{"role": "user", "content": user_parts}]
    if draw(st.booleans()):
        msgs.insert(0, {"role": "system", "content": draw(st.text(max_size=40))})
    if draw(st.booleans()):
        msgs.append({"role": "assistant", "content": draw(st.text(max_size=40))})
        msgs.append({"role": "user", "content": draw(st.text(max_size=40))})
    if not hostile:
        return msgs
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.integers(0, len(msgs) - 1))
        kind = draw(st.sampled_from(["role", "content", "part", "extra", "drop-key", "replace"]))
        message = msgs[target]
        if not isinstance(message, dict):
            continue
        if kind == "role":
            message["role"] = draw(st.one_of(odd_text, junk, st.just("tool")))
        elif kind == "content":
            message["content"] = draw(
                st.one_of(odd_text, junk, st.just([]), st.lists(part_bad, max_size=3))
            )
        elif kind == "part" and isinstance(message.get("content"), list):
            message["content"].insert(draw(st.integers(0, len(message["content"]))), draw(part_bad))
        elif kind == "extra":
            message[draw(st.sampled_from(["name", "tool_calls", "x", ""]))] = draw(junk)
        elif kind == "drop-key":
            message.pop(draw(st.sampled_from(["role", "content"])), None)
        else:
            msgs[target] = draw(junk)
    return draw(st.one_of(st.just(msgs), st.just(msgs), st.just([]), junk))


@st.composite
def json_bodies(draw: st.DrawFn, form: str) -> Any:
    """A body of `form` ("simple" or "messages"): valid, or a valid one made hostile in up
    to three places, with an unknown field or a forbidden combination now and then."""
    own = SIMPLE_FIELDS if form == "simple" else {}
    fields = {**own, **FIELDS}
    names = sorted(fields)
    present = set(draw(st.lists(st.sampled_from(names), max_size=5, unique=True)))
    n_hostile = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
    hostile = set(
        draw(st.lists(st.sampled_from(names), min_size=n_hostile, max_size=n_hostile, unique=True))
    )
    if form == "simple":
        present.add("images")
        if draw(one_in(3)):  # the images are where most of the intake's own checks are
            hostile.add("images")
    body: dict[str, Any] = {}
    for name in sorted(present | hostile):
        valid, bad = fields[name]
        body[name] = draw(bad if name in hostile else valid)
    if form == "messages":
        body["messages"] = draw(messages(hostile=draw(st.booleans())))
        if draw(one_in(10)):  # `messages` with a shorthand field: 400
            name = draw(st.sampled_from(sorted(SIMPLE_FIELDS)))
            body[name] = draw(SIMPLE_FIELDS[name][0])
    if draw(one_in(8)):
        body[draw(st.text(max_size=12).filter(lambda k: k not in fields))] = draw(junk)
    if draw(one_in(16)):
        return draw(junk)  # not an object at all
    return body


# ---- headers ----

header_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=["Cc", "Zs"]),
    max_size=40,
)


@st.composite
def request_headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    auth = draw(st.sampled_from(["good"] * 16 + ["none", "wrong", "api-key", "odd"]))
    if auth == "none":
        pass  # no key: 401
    elif auth == "wrong":
        headers["Authorization"] = "Bearer " + draw(header_text)
    elif auth == "api-key":
        headers["api-key"] = KEYS["alice"]
    elif auth == "odd":
        headers["Authorization"] = draw(
            st.sampled_from(["Bearer", "Bearer ", "Basic a2V5", KEYS["alice"]])
        )
    else:
        headers["Authorization"] = f"Bearer {KEYS['alice']}"
    if draw(one_in(8)):
        headers["Idempotency-Key"] = draw(st.one_of(header_text, st.just("k" * 256)))
    if draw(one_in(8)):
        # Never a short wait a valid job could sit in: over 60 (400), 0, or not `wait=N` at all.
        headers["Prefer"] = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "wait=61",
                        "wait=99999999999999999999",
                        "wait=0",
                        "respond-async",
                        "wait=-1",
                        "wait=1e3",
                    ]
                ),
                header_text.filter(lambda v: "wait=" not in v),
            )
        )
    return headers


# ---- sending and checking ----


def post(
    stack: Stack, path: str, body: bytes, content_type: str | None, headers: dict[str, str]
) -> requests.Response:
    """One request on a connection of its own: an early error answer to a large body closes
    its connection (BUG-7 in test_findings.py), so one example never depends on what the
    previous one sent."""
    headers = dict(headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    with requests.Session() as http:
        http.trust_env = False
        return http.post(f"{stack.base_url}{path}", data=body, headers=headers, timeout=60)


def describe(path: str, headers: dict[str, str], content_type: str | None, body: bytes) -> str:
    shown = body if len(body) <= 600 else body[:600] + b"...(%d bytes)" % len(body)
    return f"POST {path} headers={headers} Content-Type={content_type!r} body={shown!r}"


def check(tally: Tally, response: requests.Response, path: str, described: str) -> None:
    tally.record(response, described)  # no 5xx, and errors keep the error schema
    status = response.status_code
    assert status in ALLOWED[path], f"{status} for {described}\n{response.text[:300]}"
    if status < 300:
        if path == JOBS:
            job = Job.model_validate(response.json())
            assert response.headers["Location"] == f"/v1/jobs/{job.id}"
        else:
            TokenCount.model_validate(response.json())


def encode_json(body: Any, *, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate goes out as the invalid UTF-8 it would be (CESU-8).
    return json.dumps(body, ensure_ascii=ascii_only, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


def tokens_or_jobs() -> st.SearchStrategy[str]:
    return st.sampled_from([JOBS, TOKENS])


# ---- the properties: JSON bodies ----


@pytest.mark.parametrize("form", ["simple", "messages"])
@fuzz(max_examples=250)
@given(
    path=tokens_or_jobs(),
    data=st.data(),
    headers=request_headers(),
    ascii_only=st.booleans(),
)
def test_json_bodies_keep_the_contract(
    stack: Stack,
    tally: Tally,
    form: str,
    path: str,
    data: st.DataObject,
    headers: dict[str, str],
    ascii_only: bool,
) -> None:
    body = data.draw(json_bodies(form), label="body")
    raw = encode_json(body, ascii_only=ascii_only)
    response = post(stack, path, raw, "application/json", headers)
    check(tally, response, path, describe(path, headers, "application/json", raw))


# ---- raw bytes that are barely JSON ----


def _nest(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


GOOD_BODY = json.dumps({"prompt": "x", "images": [VALID_DATA_URLS[0]]})
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda cut: GOOD_BODY[:cut].encode(), st.integers(0, len(GOOD_BODY) - 1)),
    st.builds(lambda depth: _nest(depth).encode(), st.integers(1, 120)),
    st.builds(
        lambda depth: (
            GOOD_BODY[:-1] + ', "response_format": {"a": ' + _nest(depth) + "}}"
        ).encode(),
        st.integers(1, 120),
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'""',
            b"0",
            b"NaN",
            b"-Infinity",
            b"true",
            b"\xef\xbb\xbf" + GOOD_BODY.encode(),  # a UTF-8 byte-order mark
            GOOD_BODY.encode("utf-16"),
            GOOD_BODY.replace('"x"', '"\\ud800"').encode(),  # an escaped lone surrogate
            GOOD_BODY.replace('"x"', '"\xed\xa0\x80"').encode("latin-1"),  # a raw one
            GOOD_BODY.replace('"x"', '"\xff\xfe"').encode("latin-1"),  # invalid UTF-8
            GOOD_BODY.replace('"x"', "1" * 5000).encode(),  # over int_max_str_digits
            GOOD_BODY.replace('"x"', "1e999999").encode(),
            GOOD_BODY.replace("{", '{"prompt": 1, ', 1).encode(),  # a duplicate key
            GOOD_BODY.encode() + b" trailing",
            GOOD_BODY.encode() + b"\x00",
            b'{"prompt": "x", "images": ["' + b"A" * 100_000 + b'"]}',
        ]
    ),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/json; charset=bogus",
            "APPLICATION/JSON",
            "application/json;;;",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "",
        ]
    ),
    st.none(),
    header_text,
)


@fuzz(max_examples=300)
@given(
    path=tokens_or_jobs(), body=raw_bodies, content_type=content_types, headers=request_headers()
)
@example(  # BUG-3: was a RecursionError, 500
    path=JOBS,
    body=_nest(100_000).encode(),
    content_type="application/json",
    headers={"Authorization": f"Bearer {KEYS['alice']}"},
)
@example(path=JOBS, body=GOOD_BODY.encode(), content_type="application/json", headers={})
def test_raw_bodies_keep_the_contract(
    stack: Stack,
    tally: Tally,
    path: str,
    body: bytes,
    content_type: str | None,
    headers: dict[str, str],
) -> None:
    response = post(stack, path, body, content_type, headers)
    check(tally, response, path, describe(path, headers, content_type, body))


# ---- multipart ----

PLAIN_FIELDS = {
    "prompt": (st.text(max_size=40), odd_text),
    "system": (st.text(max_size=40), odd_text),
    "model": (st.sampled_from(["mimo-v2.5", "mimo-v2-omni"]), odd_text),
    "max_completion_tokens": (
        st.integers(1, 4096).map(str),
        st.one_of(odd_text, st.sampled_from(["0", "-1", "1.5", "²", "9" * 5000])),
    ),
    "webhook_url": (st.just(HOOK), http_urls),
    "api": (st.sampled_from(["openai", "anthropic"]), odd_text),
    "resize": (st.sampled_from(["auto", "never"]), odd_text),
}
field_names = st.one_of(
    st.sampled_from(
        ["image", "image", "image", "Image", "image[]", "images", "image ", "", "request", "prompt"]
    ),
    st.text(max_size=12),
)
filenames = st.one_of(
    st.sampled_from(
        ["a.png", "", "../../etc/passwd", "a.png\x00.exe", "a\u202egnp.exe", "x" * 300]
    ),
    st.text(max_size=20),
)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    # Mostly a few files, now and then many (the cap is 64); mostly good images in `image`.
    many = draw(one_in(8))
    n_files = draw(st.integers(63, 70) if many else st.integers(0, 4))
    parts: list[Any] = []
    for _ in range(n_files):
        odd = not many and draw(one_in(4))
        name = draw(field_names) if odd and draw(st.booleans()) else "image"
        content = draw(image_bytes if odd else st.sampled_from(list(TINY.values())))
        mime = draw(st.one_of(st.none(), mimes))
        file = (draw(filenames), content) if mime is None else (draw(filenames), content, mime)
        parts.append((name, file))
    mode = draw(st.sampled_from(["plain"] * 3 + ["request"] * 3 + ["both", "none"]))
    if mode in ("plain", "both"):
        names = sorted(PLAIN_FIELDS)
        present = set(draw(st.lists(st.sampled_from(names), max_size=4, unique=True)))
        n_hostile = draw(st.sampled_from([0, 0, 1, 2]))
        hostile = set(
            draw(
                st.lists(
                    st.sampled_from(names), min_size=n_hostile, max_size=n_hostile, unique=True
                )
            )
        )
        for name in sorted(present | hostile):
            valid, bad = PLAIN_FIELDS[name]
            parts.append((name, draw(bad if name in hostile else valid)))
        if draw(one_in(6)):
            parts.append((draw(field_names), draw(odd_text)))  # an unknown or repeated field
    if mode in ("request", "both"):
        body = draw(json_bodies(draw(st.sampled_from(["simple", "messages"]))))
        if isinstance(body, dict) and draw(st.booleans()):
            # Point images at the uploads, as API.md's multipart form does.
            refs = draw(st.lists(upload_refs, min_size=1, max_size=3))
            if "messages" in body:
                body["messages"] = [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": r}} for r in refs],
                    }
                ]
            else:
                body["images"] = refs
        text = draw(odd_text) if draw(one_in(8)) else json.dumps(body, allow_nan=True)
        parts.append(("request", text))
    order = draw(st.permutations(range(len(parts))))
    return encode_multipart_formdata([parts[i] for i in order])


@fuzz(max_examples=300)
@given(path=tokens_or_jobs(), multipart=multipart_bodies(), headers=request_headers())
def test_multipart_bodies_keep_the_contract(
    stack: Stack,
    tally: Tally,
    path: str,
    multipart: tuple[bytes, str],
    headers: dict[str, str],
) -> None:
    body, content_type = multipart
    response = post(stack, path, body, content_type, headers)
    check(tally, response, path, describe(path, headers, content_type, body))


broken_multipart = st.one_of(
    st.binary(max_size=300).map(lambda b: b"--xyz\r\n" + b),
    st.builds(
        lambda head, body: b"--xyz\r\n" + head + b"\r\n\r\n" + body + b"\r\n--xyz--\r\n",
        st.one_of(
            st.sampled_from(
                [
                    b'Content-Disposition: form-data; name="image"; filename="a.png"',
                    b'Content-Disposition: form-data; name="image"',
                    b'Content-Disposition: form-data; name="prompt"\r\n'
                    b"Content-Type: text/plain; charset=bogus",
                    b'Content-Disposition: form-data; name="\xff\xfe"',
                    b"Content-Disposition: attachment",
                    b"",
                ]
            ),
            st.binary(max_size=80),
        ),
        st.one_of(st.sampled_from(list(TINY.values())), st.binary(max_size=100)),
    ),
    st.sampled_from([b"", b"--xyz--\r\n", b"--xyz\r\n", b"--other\r\n\r\n--other--"]),
)


@fuzz(max_examples=150)
@given(
    path=tokens_or_jobs(),
    body=broken_multipart,
    boundary=st.one_of(
        st.just("xyz"), st.sampled_from(["", '"xyz"', "x" * 300, "xyz; boundary=abc"]), header_text
    ),
    headers=request_headers(),
)
def test_broken_multipart_keeps_the_contract(
    stack: Stack,
    tally: Tally,
    path: str,
    body: bytes,
    boundary: str,
    headers: dict[str, str],
) -> None:
    content_type = f"multipart/form-data; boundary={boundary}"
    response = post(stack, path, body, content_type, headers)
    check(tally, response, path, describe(path, headers, content_type, body))
