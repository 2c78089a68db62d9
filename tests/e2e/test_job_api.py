"""Managing jobs through the real stack: cancel, delete, list, idempotency, token counts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from tests.support import CORPUS, Stack, data_url
from visionq import tokens
from visionq.settings import MIMO_MAX_IMAGE_BYTES

GOOD = CORPUS / "good"
JPEG = data_url(GOOD / "hopper.jpg")


def _slow_job(stack: Stack, seconds: float = 3, tenant: str = "alice") -> str:
    response = stack.submit({"prompt": f"[sim:latency={seconds}]", "images": [JPEG]}, tenant)
    assert response.status_code == 202
    return response.json()["id"]


def _poll(what: str, done: Callable[[], bool], stack: Stack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}:\n{stack.logs()}"
        time.sleep(0.02)


def _job(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.session() as http:
        return http.get(f"{stack.base_url}/v1/jobs/{job_id}").json()


def _upstream_answered(stack: Stack, job_id: str) -> bool:
    """The upstream worker logged the answer to this job's call."""
    worker = next(p for p in stack.processes if p.name == "worker-upstream")
    lines = worker.log_path.read_text(errors="replace").splitlines()
    return any(
        line.get("job_id") == job_id and line["message"].startswith("upstream answered")
        for line in (json.loads(text) for text in lines if text.startswith("{"))
    )


# --- cancel -------------------------------------------------------------------------------


def test_cancel_a_running_job_discards_its_answer(stack: Stack) -> None:
    job_id = _slow_job(stack, 2)
    _poll("the job in its upstream call", lambda: _job(stack, job_id)["attempts"] >= 1, stack)
    with stack.session() as http:
        response = http.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.json()["error"]["type"] == "canceled"
    # The upstream answers meanwhile; it must be thrown away. The worker is done with the
    # job once it has deleted the prepared body, right after it tried to record the answer.
    _poll("the upstream's answer", lambda: _upstream_answered(stack, job_id), stack)
    body = stack.storage_root / "bodies" / job_id
    _poll("the worker done with the job", lambda: not body.exists(), stack)
    job = stack.wait(job_id)
    assert job["status"] == "canceled"
    assert job["result"] is None


def test_cancel_a_finished_job_is_409(stack: Stack) -> None:
    job = stack.run({"prompt": "done", "images": [JPEG]})
    with stack.session() as http:
        response = http.post(f"{stack.base_url}/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"


def test_cancel_another_tenants_job_is_404(stack: Stack) -> None:
    job_id = _slow_job(stack, 0, tenant="alice")
    with stack.session("bob") as http:
        response = http.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel")
    assert response.status_code == 404
    assert stack.wait(job_id)["status"] == "succeeded"


# --- delete -------------------------------------------------------------------------------


def _stored(stack: Stack, sha: str) -> bool:
    return (stack.storage_root / "images" / sha[:2] / sha).exists()


def _unique_png(tmp_path: Path, name: str, colour: tuple[int, int, int]) -> Path:
    path = tmp_path / name
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def test_delete_removes_the_record_and_unshared_images(stack: Stack, tmp_path: Path) -> None:
    image = _unique_png(tmp_path, "own.png", (1, 2, 3))
    job = stack.run({"prompt": "x", "images": [data_url(image)]})
    sha = job["images"][0]["sha256"]
    assert _stored(stack, sha)
    with stack.session() as http:
        assert http.delete(f"{stack.base_url}/v1/jobs/{job['id']}").status_code == 204
        assert http.get(f"{stack.base_url}/v1/jobs/{job['id']}").status_code == 404
        assert http.delete(f"{stack.base_url}/v1/jobs/{job['id']}").status_code == 404
    assert not _stored(stack, sha)


def test_delete_keeps_images_another_job_uses(stack: Stack, tmp_path: Path) -> None:
    image = _unique_png(tmp_path, "shared.png", (4, 5, 6))
    first = stack.run({"prompt": "x", "images": [data_url(image)]})
    second = stack.run({"prompt": "y", "images": [data_url(image)]}, tenant="bob")
    sha = first["images"][0]["sha256"]
    assert second["images"][0]["sha256"] == sha
    with stack.session() as http:
        assert http.delete(f"{stack.base_url}/v1/jobs/{first['id']}").status_code == 204
    assert _stored(stack, sha)
    with stack.session("bob") as http:
        assert http.delete(f"{stack.base_url}/v1/jobs/{second['id']}").status_code == 204
    assert not _stored(stack, sha)


# --- uploads ------------------------------------------------------------------------------


def _spooled_images(stack: Stack) -> list[Path]:
    """Images left in the store's temporary folder (the workers' bodies there are JSON)."""
    tmp = stack.storage_root / "tmp"
    return [p for p in tmp.iterdir() if p.read_bytes()[:4] == b"\x89PNG"] if tmp.exists() else []


def test_an_upload_is_stored_under_its_hash_once(stack: Stack, tmp_path: Path) -> None:
    image = _unique_png(tmp_path, "upload.png", (7, 8, 9))
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    first = stack.upload([image], {"prompt": "x"})
    assert first.status_code == 202, first.text
    stored = stack.storage_root / "images" / sha[:2] / sha
    assert stored.read_bytes() == image.read_bytes()
    before = stored.stat()
    again = stack.upload([image, image], {"prompt": "y"}, tenant="bob")
    assert again.status_code == 202, again.text
    after = stored.stat()
    # The same bytes again are found, not written again.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stack.wait(again.json()["id"], tenant="bob")["status"] == "succeeded"
    assert _spooled_images(stack) == []


def test_an_oversized_upload_is_413_and_leaves_nothing(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as out:
        out.write((GOOD / "hopper.png").read_bytes())
        out.truncate(MIMO_MAX_IMAGE_BYTES + 1)
    small = _unique_png(tmp_path, "before-the-big-one.png", (13, 14, 15))
    before = sorted((stack.storage_root / "images").rglob("*"))
    # The first part is received whole before the second goes over the cap: both go.
    response = stack.upload([small, big], {"prompt": "x"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert sorted((stack.storage_root / "images").rglob("*")) == before
    assert _spooled_images(stack) == []


def test_a_refused_upload_leaves_no_temporary_file(stack: Stack, tmp_path: Path) -> None:
    image = _unique_png(tmp_path, "refused.png", (10, 11, 12))
    response = stack.upload([image], {"prompt": "x", "unknown": "y"})
    assert response.status_code == 400
    assert _spooled_images(stack) == []


def test_delete_another_tenants_job_is_404(stack: Stack) -> None:
    job = stack.run({"prompt": "x", "images": [JPEG]})
    with stack.session("bob") as http:
        assert http.delete(f"{stack.base_url}/v1/jobs/{job['id']}").status_code == 404
    with stack.session() as http:
        assert http.get(f"{stack.base_url}/v1/jobs/{job['id']}").status_code == 200


# --- list ---------------------------------------------------------------------------------


def _page(http: requests.Session, stack: Stack, **params: object) -> dict:
    response = http.get(f"{stack.base_url}/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_list_is_newest_first_paginated_and_stable_while_adding(stack: Stack) -> None:
    # A tenant of its own: the stack's API keys include only alice and bob, so use bob and
    # only look at jobs made here (ids are unique and time-ordered).
    mine = [
        stack.submit({"prompt": f"n{i}", "images": [JPEG]}, "bob").json()["id"] for i in range(7)
    ]
    seen: list[str] = []
    with stack.session("bob") as http:
        page = _page(http, stack, limit=3)
        assert page["object"] == "list"
        seen += [j["id"] for j in page["data"]]
        # Jobs added while paging appear before the cursor, never on a later page.
        added = stack.submit({"prompt": "late", "images": [JPEG]}, "bob").json()["id"]
        while page["has_more"]:
            page = _page(http, stack, limit=3, after=page["next"])
            seen += [j["id"] for j in page["data"]]
    assert added not in seen
    assert seen[: len(mine)] == list(reversed(mine))
    assert len(seen) == len(set(seen))


def test_list_filters_by_status_and_tenant(stack: Stack) -> None:
    failed = stack.run({"prompt": "x [sim:status=400]", "images": [JPEG]})
    with stack.session() as http:
        page = _page(http, stack, status="failed", limit=100)
    assert failed["id"] in [j["id"] for j in page["data"]]
    assert all(j["status"] == "failed" for j in page["data"])
    with stack.session("bob") as http:
        bob_ids = {j["id"] for j in _page(http, stack, limit=100)["data"]}
    assert failed["id"] not in bob_ids


def test_list_rejects_bad_parameters(stack: Stack) -> None:
    with stack.session() as http:
        for params in ({"limit": 0}, {"limit": 101}, {"status": "done"}, {"after": "x"}):
            response = http.get(f"{stack.base_url}/v1/jobs", params=params)
            assert response.status_code == 400, params
            assert response.json()["error"]["type"] == "invalid_request"


# --- idempotency --------------------------------------------------------------------------


def _post_with_key(stack: Stack, key: str, body: dict) -> requests.Response:
    with stack.session() as http:
        return http.post(f"{stack.base_url}/v1/jobs", json=body, headers={"Idempotency-Key": key})


def test_same_key_same_body_returns_the_first_job(stack: Stack) -> None:
    body = {"prompt": "once", "images": [JPEG]}
    first = _post_with_key(stack, "k-same-1", body)
    again = _post_with_key(stack, "k-same-1", body)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_same_key_uploads_are_fingerprinted_by_their_bytes(stack: Stack) -> None:
    def upload(key: str, name: str) -> requests.Response:
        with stack.session() as http, (GOOD / name).open("rb") as image:
            return http.post(
                f"{stack.base_url}/v1/jobs",
                files=[("image", (name, image))],
                data={"prompt": "once"},
                headers={"Idempotency-Key": key},
                timeout=60,
            )

    first = upload("k-upload-1", "hopper.png")
    again = upload("k-upload-1", "hopper.png")
    other = upload("k-upload-1", "hopper.jpg")
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
    assert again.json()["id"] == first.json()["id"]


def test_same_key_other_body_is_409(stack: Stack) -> None:
    assert _post_with_key(stack, "k-diff-1", {"prompt": "a", "images": [JPEG]}).status_code == 202
    response = _post_with_key(stack, "k-diff-1", {"prompt": "b", "images": [JPEG]})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"


def test_keys_are_per_tenant(stack: Stack) -> None:
    body = {"prompt": "mine", "images": [JPEG]}
    alice = _post_with_key(stack, "k-tenant-1", body)
    with stack.session("bob") as http:
        bob = http.post(
            f"{stack.base_url}/v1/jobs", json=body, headers={"Idempotency-Key": "k-tenant-1"}
        )
    assert bob.status_code == 202
    assert bob.json()["id"] != alice.json()["id"]


def test_concurrent_requests_with_one_key_make_one_job(stack: Stack) -> None:
    body = {"prompt": "race", "images": [JPEG]}
    responses: list[requests.Response] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        barrier.wait()
        responses.append(_post_with_key(stack, "k-race-1", body))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.json()["id"] for r in responses}) == 1
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]


def test_a_refused_first_request_does_not_burn_the_key(stack: Stack) -> None:
    bad = _post_with_key(stack, "k-retry-1", {"prompt": "x", "images": ["data:image/png;base64,@"]})
    assert bad.status_code == 400
    good = _post_with_key(stack, "k-retry-1", {"prompt": "x", "images": [JPEG]})
    assert good.status_code == 202


# --- tokens -------------------------------------------------------------------------------


def test_tokens_counts_each_image_and_stores_nothing(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000)).save(big)
    before = sorted(p.name for p in (stack.storage_root / "images").rglob("*"))
    with stack.session() as http:
        response = http.post(
            f"{stack.base_url}/v1/tokens", json={"prompt": "x", "images": [JPEG, data_url(big)]}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [i["format"] for i in body["images"]] == ["jpeg", "png"]
    assert body["images"][1]["image_tokens"] == tokens.image_tokens(4000, 3000)
    assert body["image_tokens"] == tokens.image_tokens(128, 128) + tokens.image_tokens(4000, 3000)
    assert sorted(p.name for p in (stack.storage_root / "images").rglob("*")) == before


def test_tokens_multipart(stack: Stack) -> None:
    with stack.session() as http, (GOOD / "hopper.png").open("rb") as f:
        response = http.post(
            f"{stack.base_url}/v1/tokens", files=[("image", ("a.png", f))], data={"prompt": "x"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["images"][0] == {
        "index": 0,
        "format": "png",
        "width": 128,
        "height": 128,
        "image_tokens": 16,
    }


def test_tokens_refuses_urls_and_non_images(stack: Stack) -> None:
    with stack.session() as http:
        url = http.post(
            f"{stack.base_url}/v1/tokens",
            json={"prompt": "x", "images": ["https://example.com/a.png"]},
        )
        tif = http.post(
            f"{stack.base_url}/v1/tokens",
            json={"prompt": "x", "images": [data_url(CORPUS / "other/hopper.tif", "image/png")]},
        )
    image = "messages[0].content[0].image_url.url"  # the shorthand's one image, named
    assert (url.status_code, url.json()["error"]["type"]) == (400, "invalid_request")
    assert url.json()["error"]["param"] == image
    assert (tif.status_code, tif.json()["error"]["type"]) == (415, "unsupported_media_type")
    assert tif.json()["error"]["param"] == image
