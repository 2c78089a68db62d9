"""Every row of API.md's error table, as JSON, from the real API under gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import CORPUS, KEYS, Receiver, Stack, data_url, stack_env, start_api
from visionq.dev.ports import free_port
from visionq.settings import MIMO_MAX_IMAGE_BYTES

GOOD = CORPUS / "good"


def _error(response: requests.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == type_
    assert error["message"]
    return error


def test_missing_key_is_401(stack: Stack) -> None:
    response = requests.post(f"{stack.base_url}/v1/jobs", json={"prompt": "x"}, timeout=10)
    _error(response, 401, "unauthorized")


def test_wrong_key_is_401(stack: Stack) -> None:
    response = requests.get(
        f"{stack.base_url}/v1/jobs/job_x",
        headers={"Authorization": "Bearer key-alice-not"},
        timeout=10,
    )
    _error(response, 401, "unauthorized")


def test_api_key_header_is_accepted(stack: Stack) -> None:
    response = requests.post(
        f"{stack.base_url}/v1/jobs",
        headers={"api-key": KEYS["bob"]},
        json={"prompt": "x", "images": [data_url(GOOD / "hopper.jpg")]},
        timeout=10,
    )
    assert response.status_code == 202
    job_id = response.json()["id"]
    # bob's job, the same as one made with bob's bearer key: his to read, not alice's.
    assert stack.wait(job_id, tenant="bob")["status"] == "succeeded"
    with stack.session("alice") as alice:
        assert alice.get(f"{stack.base_url}/v1/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs/{id}?wait=1"),
        ("POST", "/v1/jobs/{id}/cancel"),
        ("DELETE", "/v1/jobs/{id}"),
        ("POST", "/v1/jobs/{id}/webhook/redeliver"),
    ],
)
def test_another_tenants_job_answers_exactly_like_an_unknown_one(
    stack: Stack, receiver: Receiver, method: str, path: str
) -> None:
    job_id = stack.submit(
        {
            "prompt": "mine",
            "images": [data_url(GOOD / "hopper.jpg")],
            "webhook": {"url": receiver.url},
        },
        tenant="alice",
    ).json()["id"]
    unknown_id = "job_" + "0" * 30
    with stack.session("bob") as bob:
        theirs = bob.request(method, stack.base_url + path.format(id=job_id))
        unknown = bob.request(method, stack.base_url + path.format(id=unknown_id))
    _error(theirs, 404, "not_found")
    assert theirs.status_code == unknown.status_code
    assert theirs.text.replace(job_id, "<id>") == unknown.text.replace(unknown_id, "<id>")
    assert theirs.headers.keys() == unknown.headers.keys()
    # And it did nothing to alice's job.
    assert stack.wait(job_id, tenant="alice")["status"] == "succeeded"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"prompt": "x", "images": ["https://example.com/a.png"], "frobnicate": 1}',
        b'{"messages": []}',
        b'{"prompt": "x", "images": []}',
        b'{"prompt": "x", "images": ["ftp://example.com/a.png"]}',
        b'{"prompt": "x", "images": ["data:image/png;base64,@@@@"]}',
        b'{"prompt": "x", "images": ["data:image/png,notbase64"]}',
        b'{"prompt": "x", "images": ["https://example.com/a.png"], "model": "gpt-4"}',
        b'{"prompt": "x", "images": ["https://example.com/a.png"], "api": "gemini"}',
        b'{"prompt": "x", "images": ["https://example.com/a.png"], "metadata": {"a": 1}}',
    ],
    ids=[
        "malformed",
        "not-object",
        "unknown-field",
        "no-messages",
        "no-images",
        "ftp",
        "bad-base64",
        "not-base64-url",
        "unknown-model",
        "unknown-api",
        "metadata-type",
    ],
)
def test_bad_requests_are_400(stack: Stack, body: bytes) -> None:
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/jobs", data=body, headers={"Content-Type": "application/json"}
        )
    _error(response, 400, "invalid_request")


def test_too_many_metadata_keys_is_400(stack: Stack) -> None:
    response = stack.submit(
        {
            "prompt": "x",
            "images": [data_url(GOOD / "hopper.jpg")],
            "metadata": {f"k{i}": "v" for i in range(17)},
        }
    )
    assert _error(response, 400, "invalid_request")["param"] == "metadata"


def test_400_names_the_bad_image(stack: Stack) -> None:
    response = stack.submit(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x"},
                        {"type": "image_url", "image_url": {"url": "upload:3"}},
                    ],
                }
            ]
        }
    )
    assert (
        _error(response, 400, "invalid_request")["param"] == "messages[0].content[1].image_url.url"
    )


def test_non_image_data_url_is_415(stack: Stack) -> None:
    response = stack.submit(
        {"prompt": "x", "images": [data_url(CORPUS / "other/hopper.tif", "image/png")]}
    )
    _error(response, 415, "unsupported_media_type")


def test_non_image_upload_is_415(stack: Stack) -> None:
    response = stack.upload([CORPUS / "other/hopper.psd"], {"prompt": "x"})
    _error(response, 415, "unsupported_media_type")


def test_decompression_bomb_is_422_at_intake(stack: Stack) -> None:
    response = stack.submit(
        {"prompt": "x", "images": [data_url(CORPUS / "bad/decompression_bomb.gif")]}
    )
    _error(response, 422, "invalid_image")


def test_base64_over_50mb_is_413(stack: Stack) -> None:
    payload = "A" * (MIMO_MAX_IMAGE_BYTES + 4)
    response = stack.submit({"prompt": "x", "images": [f"data:image/png;base64,{payload}"]})
    _error(response, 413, "payload_too_large")


def test_upload_over_50mb_is_413(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.write((GOOD / "hopper.png").read_bytes())
        out.truncate(MIMO_MAX_IMAGE_BYTES + 1)
    response = stack.upload([big], {"prompt": "x"})
    _error(response, 413, "payload_too_large")


def test_a_refused_request_stores_nothing(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "unique.png"
    marker.write_bytes((GOOD / "hopper.png").read_bytes() + b"unique-trailer-for-this-test")
    before = sorted(p.name for p in (stack.storage_root / "images").rglob("*"))
    response = stack.submit(
        {
            "prompt": "x",
            "images": [data_url(marker), data_url(CORPUS / "other/hopper.tif", "image/png")],
        }
    )
    _error(response, 415, "unsupported_media_type")
    after = sorted(p.name for p in (stack.storage_root / "images").rglob("*"))
    assert before == after


def test_wrong_content_type_is_400(stack: Stack) -> None:
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/jobs", data="prompt=x", headers={"Content-Type": "text/plain"}
        )
    _error(response, 400, "invalid_request")


def test_unknown_route_and_method_are_json(stack: Stack) -> None:
    with stack.session() as http:
        _error(http.get(f"{stack.base_url}/v1/nothing-here"), 404, "not_found")
        response = http.delete(f"{stack.base_url}/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request"


def _another_api(env: dict[str, str], tmp: pytest.TempPathFactory, name: str) -> Iterator[str]:
    """A second API process on the test stack, configured differently."""
    api, base_url = start_api(env, tmp.mktemp(f"logs-{name}"), name)
    yield base_url
    api.stop()


@pytest.fixture(scope="module")
def small_cap_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = dict(stack.env, VISIONQ_MAX_REQUEST_BYTES="100000")
    yield from _another_api(env, tmp_path_factory, "api-small-cap")


def test_request_over_the_cap_is_413_json(small_cap_api: str) -> None:
    body = {"prompt": "x", "images": ["data:image/png;base64," + "A" * 200_000]}
    response = requests.post(
        f"{small_cap_api}/v1/jobs",
        json=body,
        headers={"Authorization": f"Bearer {KEYS['alice']}"},
        timeout=10,
    )
    _error(response, 413, "payload_too_large")


def test_chunked_request_over_the_cap_is_413_json(small_cap_api: str) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: the cap must hold while reading
        yield b'{"prompt": "x", "images": ["data:image/png;base64,'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'"]}'

    response = requests.post(
        f"{small_cap_api}/v1/jobs",
        data=body(),
        headers={"Authorization": f"Bearer {KEYS['alice']}", "Content-Type": "application/json"},
        timeout=10,
    )
    _error(response, 413, "payload_too_large")


def test_too_many_images_is_400(stack: Stack) -> None:
    response = stack.submit({"prompt": "x", "images": [data_url(GOOD / "hopper.gif")] * 65})
    assert _error(response, 400, "invalid_request")["param"] == "images"


def test_a_lone_surrogate_in_the_prompt_does_not_break_the_job(stack: Stack) -> None:
    body = (
        b'{"prompt": "x \\ud800 y", "images": ["' + data_url(GOOD / "hopper.gif").encode() + b'"]}'
    )
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/jobs", data=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    # The text reached the upstream as it was sent, the lone surrogate included.
    assert job["result"]["content"].endswith("text: x \ud800 y")


@pytest.fixture(scope="module")
def broken_storage_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    not_a_dir = tmp_path_factory.mktemp("broken") / "file"
    not_a_dir.write_text("storage cannot live under a file")
    env = dict(stack.env, VISIONQ_STORAGE_URL=f"file://{not_a_dir}/images")
    yield from _another_api(env, tmp_path_factory, "api-bad-storage")


def test_storage_down_is_503_not_500(broken_storage_api: str) -> None:
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    body = {"prompt": "x", "images": [data_url(GOOD / "hopper.jpg")]}
    response = requests.post(
        f"{broken_storage_api}/v1/jobs", json=body, headers=headers, timeout=30
    )
    _error(response, 503, "unavailable")
    ready = requests.get(f"{broken_storage_api}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"] != "ok"


@pytest.fixture(scope="module")
def redis_down_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = stack_env(f"redis://127.0.0.1:{free_port()}/0", stack.storage_root, stack.simulator_url)
    yield from _another_api(env, tmp_path_factory, "api-redis-down")


def test_redis_down_is_503_with_retry_after(redis_down_api: str) -> None:
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    body = {"prompt": "x", "images": [data_url(GOOD / "hopper.jpg")]}
    response = requests.post(f"{redis_down_api}/v1/jobs", json=body, headers=headers, timeout=30)
    _error(response, 503, "unavailable")
    assert int(response.headers["Retry-After"]) > 0
    response = requests.get(f"{redis_down_api}/v1/jobs/job_x", headers=headers, timeout=30)
    _error(response, 503, "unavailable")
    ready = requests.get(f"{redis_down_api}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] != "ok"
    assert requests.get(f"{redis_down_api}/healthz", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def second_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _another_api(stack.env, tmp_path_factory, "api-second")


def test_a_tenant_over_its_rate_limit_gets_429_on_every_replica(
    stack: Stack, second_api: str
) -> None:
    # carol may make 3 requests a minute, counted in Redis across both API processes.
    with stack.session("carol") as carol, stack.session("alice") as alice:
        for url in (stack.base_url, second_api, stack.base_url):
            assert carol.get(f"{url}/v1/jobs?limit=1").status_code == 200
        for url in (second_api, stack.base_url):
            response = carol.get(f"{url}/v1/jobs?limit=1")
            _error(response, 429, "rate_limited")
            assert 1 <= int(response.headers["Retry-After"]) <= 60
        submit = carol.post(f"{second_api}/v1/jobs", json={"prompt": "x", "images": []})
        _error(submit, 429, "rate_limited")
        # Nobody else is slowed, and a wrong key is refused before anything is counted.
        assert alice.get(f"{second_api}/v1/jobs?limit=1").status_code == 200
    stranger = requests.get(
        f"{second_api}/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    _error(stranger, 401, "unauthorized")
