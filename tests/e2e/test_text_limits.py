"""What a job may carry besides its images, and where it is kept (issue 14, item 3).

A 50 MB prompt used to be accepted, stored in the job's Redis hash for the result TTL, and
failed later with a result known at submit. Now text is capped per job, the context is
checked at submit when the images' sizes are known, and a large request lives in the
store, so Redis holds a bounded number of bytes per job whatever the client sends.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import redis
import requests
from PIL import Image

from tests.support import CORPUS, Stack, data_url
from visionq.intake import MAX_MESSAGES_PER_JOB, MAX_PARTS_PER_JOB
from visionq.settings import Settings
from visionq.state.jobs import request_body_name
from visionq.state.keys import job as job_key

JPEG = data_url(CORPUS / "good" / "hopper.jpg")
MAX_TEXT = Settings().max_text_chars
#: What one job may hold in Redis, whatever the size of its text: the hash with its images'
#: records and metadata, but never the text itself.
JOB_HASH_CAP = 32 * 1024


def _error(response: requests.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert error["type"] == type_, error
    return error


def test_a_prompt_over_the_cap_is_413_naming_it(stack: Stack) -> None:
    # The size of the report: once accepted (202) and kept 7 days in Redis.
    response = stack.submit({"prompt": "x" * (50 * 1024 * 1024), "images": [JPEG]})
    error = _error(response, 413, "payload_too_large")
    assert error["param"] == "prompt"
    assert str(MAX_TEXT) in error["message"]


def test_text_is_counted_over_the_whole_job(stack: Stack) -> None:
    half = "y" * (MAX_TEXT // 2 + 1)
    error = _error(
        stack.submit({"system": half, "prompt": half, "images": [JPEG]}), 413, "payload_too_large"
    )
    assert error["param"] == "prompt"  # the system fits; the prompt is what crosses the cap
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": JPEG}}]},
        {"role": "assistant", "content": half},
        {"role": "user", "content": [{"type": "text", "text": half}]},
    ]
    error = _error(stack.submit({"messages": messages}), 413, "payload_too_large")
    assert error["param"] == "messages[2].content[0].text"
    # The fields passed through count too: they are stored with the request.
    error = _error(
        stack.submit({"prompt": "p", "images": [JPEG], "user": "u" * (MAX_TEXT + 1)}),
        413,
        "payload_too_large",
    )
    assert error["param"] == "user"
    # Only the chat format's own words go uncounted, and only where the format has them.
    huge = "h" * (MAX_TEXT + 1)
    hidden = [
        ({"response_format": {"type": huge}}, "response_format.type"),
        ({"thinking": {"a": {"image_url": {"url": huge}}}}, "thinking.a.image_url.url"),
    ]
    for extra, param in hidden:
        body = {"prompt": "p", "images": [JPEG], **extra}
        assert _error(stack.submit(body), 413, "payload_too_large")["param"] == param
    smuggled = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": JPEG}}]},
        {"role": "user", "content": "hi", "image_url": {"url": huge}},
    ]
    error = _error(stack.submit({"messages": smuggled}), 413, "payload_too_large")
    assert error["param"] == "messages[1].image_url.url"


def test_image_urls_do_not_count_as_text(stack: Stack, tmp_path: Path) -> None:
    # A data URL is as long as its image; it has its own cap (50 MB), not the text's.
    pixels = Image.effect_noise((1800, 1800), 80).convert("RGB")
    out = io.BytesIO()
    pixels.save(out, "PNG", compress_level=0)
    payload = base64.b64encode(out.getvalue()).decode()
    assert len(payload) > MAX_TEXT
    response = stack.submit({"prompt": "noise", "images": [f"data:image/png;base64,{payload}"]})
    assert response.status_code == 202, response.text[:300]


def test_messages_and_parts_are_capped(stack: Stack) -> None:
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": JPEG}}]}
    many = [image, *[{"role": "user", "content": "hi"}] * MAX_MESSAGES_PER_JOB]
    error = _error(stack.submit({"messages": many}), 400, "invalid_request")
    assert error["param"] == "messages"
    empty = [{"type": "text", "text": ""}] * MAX_PARTS_PER_JOB
    parts = [image, {"role": "user", "content": empty}]
    error = _error(stack.submit({"messages": parts}), 400, "invalid_request")
    assert error["param"] == "messages[1].content"


def test_a_context_known_at_submit_to_be_too_long_is_refused_then(
    stack: Stack, tmp_path: Path
) -> None:
    # 4096 x 2048 is 8,192 tokens; 33 of them pass mimo-v2-omni's 262,144.
    path = tmp_path / "wide.png"
    Image.new("RGB", (4096, 2048), (30, 60, 90)).save(path)
    images = [data_url(path)] * 33
    with stack.session() as http:
        calls = stack.upstream_calls()
        listed = http.get(f"{stack.base_url}/v1/jobs", params={"limit": 1}, timeout=10).json()
        response = http.post(
            f"{stack.base_url}/v1/jobs",
            json={"model": "mimo-v2-omni", "prompt": "compare", "images": images},
            timeout=60,
        )
        error = _error(response, 400, "context_length_exceeded")
        assert error["param"] == "messages"
        assert "262144" in error["message"]
        # Nothing was created, nothing was called.
        after = http.get(f"{stack.base_url}/v1/jobs", params={"limit": 1}, timeout=10).json()
        assert after["data"][:1] == listed["data"][:1]
        assert stack.upstream_calls() == calls
        # The same images fit the larger model.
        ok = http.post(
            f"{stack.base_url}/v1/jobs",
            json={"model": "mimo-v2.5", "prompt": "compare", "images": images},
            timeout=60,
        )
        assert ok.status_code == 202, ok.text[:300]


def test_a_large_request_lives_in_the_store_not_in_redis(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    prompt = "describe this image in great detail, please. " * 40_000  # 1.8 MB
    response = stack.submit({"prompt": prompt, "images": [JPEG]})
    assert response.status_code == 202, response.text[:300]
    job_id = response.json()["id"]
    body = stack.storage_root / "bodies" / request_body_name(job_id)
    assert body.stat().st_size > len(prompt)
    assert client.memory_usage(job_key(job_id)) < JOB_HASH_CAP
    assert not client.hexists(job_key(job_id), "request")
    job = stack.wait(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert "describe this image in great detail" in job["result"]["content"]
    assert client.memory_usage(job_key(job_id)) < JOB_HASH_CAP
    with stack.session() as http:
        assert http.delete(f"{stack.base_url}/v1/jobs/{job_id}", timeout=10).status_code == 204
    assert not body.exists()
    client.close()


def test_redis_bytes_per_job_stay_bounded_by_what_the_client_sends(stack: Stack) -> None:
    """Ten jobs with 3 MB of text each: Redis holds their records, not their text."""
    client = redis.Redis.from_url(stack.redis_url)
    prompt = "z" * (3 * 1024 * 1024)
    before = int(client.info("memory")["used_memory"])
    ids = []
    for _ in range(10):
        response = stack.submit({"prompt": prompt, "images": [JPEG]})
        assert response.status_code == 202, response.text[:300]
        ids.append(response.json()["id"])
        assert client.memory_usage(job_key(ids[-1])) < JOB_HASH_CAP
    # The text alone would be 30 MB; the rest of Redis moves by a few hundred KB meanwhile.
    assert int(client.info("memory")["used_memory"]) - before < 8 * 1024 * 1024
    for job_id in ids:
        assert stack.wait(job_id, timeout=120)["status"] == "succeeded"
        assert client.memory_usage(job_key(job_id)) < JOB_HASH_CAP
    client.close()
