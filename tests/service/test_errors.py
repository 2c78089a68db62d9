"""API.md's error table, for every row the HTTP layer decides by itself: always the
documented JSON shape, never HTML, with the status, type and `param` of the table."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.app import create_app
from tests.support import CORPUS, bearer, data_url
from visionq.dev.ports import free_port
from visionq.settings import Settings

GOOD = CORPUS / "good"


def error(response: TestResponse, status: int, type_: str) -> dict[str, Any]:
    """The error object, once its status, shape and type are the documented ones."""
    assert response.status_code == status, response.text
    assert response.mimetype == "application/json"
    body = response.json
    assert body is not None and set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "param"}
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "content_type", "param"),
    [
        (b"{not json", "application/json", None),
        (b"[1, 2]", "application/json", None),
        (b'{"prompt": "x", "images": [], "frobnicate": 1}', "application/json", "frobnicate"),
        (b'{"prompt": "x", "images": ["ftp://example.com/a.png"]}', "application/json", None),
        (b"prompt=x", "text/plain", None),
    ],
    ids=["malformed", "not-object", "unknown-field", "ftp-url", "content-type"],
)
def test_400_invalid_request(
    client: FlaskClient, body: bytes, content_type: str, param: str | None
) -> None:
    response = client.post(
        "/v1/jobs", data=body, headers={**bearer("alice"), "Content-Type": content_type}
    )
    found = error(response, 400, "invalid_request")
    if param is not None:
        assert found["param"] == param


def test_404_for_an_unknown_job_and_an_unknown_route(client: FlaskClient) -> None:
    error(client.get("/v1/jobs/job_" + "0" * 30, headers=bearer("alice")), 404, "not_found")
    error(client.get("/v1/nothing-here", headers=bearer("alice")), 404, "not_found")


def test_405_keeps_its_allow_header(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    error(response, 405, "invalid_request")
    assert "GET" in response.headers["Allow"]


def test_409_for_an_idempotency_key_reused_with_another_body(client: FlaskClient) -> None:
    headers = {**bearer("alice"), "Idempotency-Key": "order-42"}
    image = data_url(GOOD / "hopper.jpg")
    first = client.post("/v1/jobs", json={"prompt": "a", "images": [image]}, headers=headers)
    again = client.post("/v1/jobs", json={"prompt": "a", "images": [image]}, headers=headers)
    other = client.post("/v1/jobs", json={"prompt": "b", "images": [image]}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["id"] == first.json["id"]
    error(other, 409, "conflict")


def test_413_for_a_request_over_the_configured_cap(settings: Settings) -> None:
    client = create_app(settings.model_copy(update={"max_request_bytes": 100_000})).test_client()
    body = {"prompt": "x", "images": ["data:image/png;base64," + "A" * 200_000]}
    error(client.post("/v1/jobs", json=body, headers=bearer("alice")), 413, "payload_too_large")


def test_415_for_a_data_url_that_is_not_an_accepted_format(client: FlaskClient) -> None:
    body = {"prompt": "x", "images": [data_url(CORPUS / "other/hopper.tif", "image/png")]}
    response = client.post("/v1/jobs", json=body, headers=bearer("alice"))
    # The shorthand is one user message: the param names the image where it ends up.
    found = error(response, 415, "unsupported_media_type")
    assert found["param"] == "messages[0].content[0].image_url.url"


def test_422_for_a_decompression_bomb_at_intake(client: FlaskClient) -> None:
    body = {"prompt": "x", "images": [data_url(CORPUS / "bad/decompression_bomb.gif")]}
    error(client.post("/v1/jobs", json=body, headers=bearer("alice")), 422, "invalid_image")


def test_429_with_retry_after_once_a_tenant_is_over_its_limit(client: FlaskClient) -> None:
    # carol may make 3 requests a minute; the others are not slowed by hers.
    for _ in range(3):
        assert client.get("/v1/jobs", headers=bearer("carol")).status_code == 200
    response = client.get("/v1/jobs", headers=bearer("carol"))
    error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert client.get("/v1/jobs", headers=bearer("alice")).status_code == 200


def test_503_with_retry_after_when_redis_does_not_answer(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = create_app(nowhere).test_client()
    response = client.get("/v1/jobs/job_x", headers=bearer("alice"))
    error(response, 503, "unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert client.get("/healthz").status_code == 200
