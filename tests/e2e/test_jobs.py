"""End to end through the real stack: each body form, order, waiting, the job object."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import requests
from PIL import Image

from tests.support import CORPUS, Stack, data_url
from visionq import tokens

GOOD = CORPUS / "good"


def _saw(path: Path) -> str:
    """How the simulator names an image it received: format, size, bytes, hash prefix."""
    data = path.read_bytes()
    with Image.open(path) as image:
        fmt = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}[
            image.format
        ]
        size = f"{image.width}x{image.height}"
    return f"{fmt} {size} {len(data)}B sha256:{hashlib.sha256(data).hexdigest()[:12]}"


def _formula(path: Path) -> int:
    with Image.open(path) as image:
        return tokens.image_tokens(image.width, image.height)


def test_messages_with_a_data_url(stack: Stack) -> None:
    body = {
        "model": "mimo-v2.5",
        "messages": [
            {"role": "system", "content": "You are MiMo."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(GOOD / "hopper.png")}},
                    {"type": "text", "text": "please describe the content of the image"},
                ],
            },
        ],
        "max_completion_tokens": 1024,
        "metadata": {"order": "42"},
    }
    response = stack.submit(body)
    assert response.status_code == 202
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["images"][0]["source"] == "data_url"
    assert accepted["images"][0]["image_tokens"] is None

    job = stack.wait(accepted["id"])
    assert job["status"] == "succeeded", job
    assert job["metadata"] == {"order": "42"}
    assert _saw(GOOD / "hopper.png") in job["result"]["content"]
    assert "text: please describe the content of the image" in job["result"]["content"]
    image = job["images"][0]
    assert image["format"] == "png"
    assert image["image_tokens"] == _formula(GOOD / "hopper.png")
    assert job["usage_estimate"]["image_tokens"] == image["image_tokens"]
    assert job["result"]["usage"]["prompt_tokens_details"]["image_tokens"] == image["image_tokens"]
    assert job["result"]["finish_reason"] == "stop"
    assert job["result"]["reasoning_content"]
    assert job["result"]["response"]["choices"][0]["message"]["content"] == job["result"]["content"]
    assert job["started_at"] >= job["created_at"]
    assert job["completed_at"] >= job["started_at"]
    assert job["attempts"] == 1


def test_shorthand_keeps_image_order(stack: Stack) -> None:
    files = [GOOD / "hopper.jpg", GOOD / "hopper.gif", GOOD / "hopper.webp", GOOD / "hopper.bmp"]
    job = stack.run(
        {"prompt": "compare", "images": [data_url(p) for p in files], "system": "be brief"}
    )
    assert job["status"] == "succeeded", job
    content = job["result"]["content"]
    positions = [content.index(_saw(p)) for p in files]
    assert positions == sorted(positions)
    assert content.startswith("simulator saw 4 image(s)")
    assert [i["format"] for i in job["images"]] == ["jpeg", "gif", "webp", "bmp"]
    assert job["usage_estimate"]["image_tokens"] == sum(_formula(p) for p in files)


def test_url_image_is_fetched_by_the_worker(stack: Stack, image_server: str) -> None:
    job = stack.run({"prompt": "what is it", "images": [f"{image_server}/good/hopper.jpg"]})
    assert job["status"] == "succeeded", job
    assert job["images"][0]["source"] == "url"
    assert _saw(GOOD / "hopper.jpg") in job["result"]["content"]


def test_unfetchable_url_fails_the_job(stack: Stack, image_server: str) -> None:
    job = stack.run({"prompt": "x", "images": [f"{image_server}/good/missing.png"]})
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_image_url"


def test_url_to_a_non_image_fails_the_job(stack: Stack, image_server: str) -> None:
    job = stack.run({"prompt": "x", "images": [f"{image_server}/other/hopper.tif"]})
    assert job["status"] == "failed"
    assert job["error"]["type"] == "unsupported_media_type"


def test_multipart_plain_fields(stack: Stack) -> None:
    response = stack.upload(
        [GOOD / "hopper.jpg", GOOD / "hopper.png"],
        {"prompt": "describe", "max_completion_tokens": "64"},
    )
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"])
    assert job["status"] == "succeeded", job
    content = job["result"]["content"]
    assert content.index(_saw(GOOD / "hopper.jpg")) < content.index(_saw(GOOD / "hopper.png"))
    assert [i["source"] for i in job["images"]] == ["upload", "upload"]


def test_multipart_request_with_upload_references(stack: Stack) -> None:
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "first the second upload"},
                    {"type": "image_url", "image_url": {"url": "upload:1"}},
                    {"type": "image_url", "image_url": {"url": data_url(GOOD / "hopper.webp")}},
                ],
            }
        ]
    }
    response = stack.upload(
        [GOOD / "hopper.jpg", GOOD / "hopper.png"], {"request": json.dumps(request)}
    )
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"])
    assert job["status"] == "succeeded", job
    content = job["result"]["content"]
    # upload:0 was not referred to, so it goes before the text; then the parts in order.
    order = [
        content.index(_saw(GOOD / name)) for name in ("hopper.jpg", "hopper.png", "hopper.webp")
    ]
    assert order == sorted(order)
    assert [i["source"] for i in job["images"]] == ["upload", "upload", "data_url"]


def test_one_upload_referred_to_twice(stack: Stack) -> None:
    request = {"prompt": "twice", "images": ["upload:0", "upload:0"]}
    response = stack.upload([GOOD / "hopper.png"], {"request": json.dumps(request)})
    assert response.status_code == 202, response.text
    job = stack.wait(response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["content"].count(_saw(GOOD / "hopper.png")) == 2


def test_get_with_wait_holds_until_finished(stack: Stack) -> None:
    response = stack.submit(
        {"prompt": "slow please [sim:latency=1]", "images": [data_url(GOOD / "hopper.jpg")]}
    )
    job_id = response.json()["id"]
    with stack.session() as http:
        started = time.monotonic()
        job = http.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}).json()
        elapsed = time.monotonic() - started
    assert job["status"] == "succeeded"
    assert elapsed >= 0.5  # it was held, not answered at once with a running job


def test_get_with_wait_gives_up_after_n_seconds(stack: Stack) -> None:
    response = stack.submit(
        {"prompt": "[sim:latency=4]", "images": [data_url(GOOD / "hopper.jpg")]}
    )
    job_id = response.json()["id"]
    with stack.session() as http:
        job = http.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 1}).json()
    assert job["status"] in ("queued", "running")
    assert stack.wait(job_id)["status"] == "succeeded"


def test_prefer_wait_answers_201_with_the_finished_job(stack: Stack) -> None:
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/jobs",
            headers={"Prefer": "wait=30"},
            json={"prompt": "now", "images": [data_url(GOOD / "hopper.jpg")]},
        )
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"


def test_anthropic_api_gives_the_same_result_shape(stack: Stack) -> None:
    job = stack.run(
        {
            "api": "anthropic",
            "system": "be brief",
            "prompt": "describe",
            "images": [data_url(GOOD / "hopper.png")],
            "max_completion_tokens": 100,
        }
    )
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert _saw(GOOD / "hopper.png") in result["content"]
    assert result["reasoning_content"]
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert result["response"]["type"] == "message"


def test_auto_resize_shrinks_what_mimo_would_shrink(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(big)
    job = stack.run({"prompt": "big", "images": [data_url(big)]})
    assert job["status"] == "succeeded", job
    image = job["images"][0]
    assert image["resized"] is True
    assert (image["width"], image["height"]) == tokens.fitted_size(4000, 3000)
    assert image["image_tokens"] == tokens.image_tokens(4000, 3000)
    assert f"{image['width']}x{image['height']}" in job["result"]["content"]


def test_resize_never_sends_the_original(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (30, 200, 30)).save(big)
    job = stack.run({"prompt": "big", "images": [data_url(big)], "resize": "never"})
    assert job["status"] == "succeeded", job
    assert job["images"][0]["resized"] is False
    assert "4000x3000" in job["result"]["content"]


def test_unknown_job_is_404(stack: Stack) -> None:
    with stack.session() as http:
        response = http.get(f"{stack.base_url}/v1/jobs/job_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_health_and_openapi(stack: Stack) -> None:
    assert requests.get(f"{stack.base_url}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{stack.base_url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "storage": "ok"}
    doc = requests.get(f"{stack.base_url}/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/jobs" in doc["paths"]
    request_schema = doc["components"]["schemas"]["JobRequest"]
    assert {"messages", "prompt", "images", "webhook", "metadata"} <= set(
        request_schema["properties"]
    )
    assert request_schema.get("additionalProperties") is False
