"""`/v1/files` on the Flask app alone: upload, read, list, delete, tenants kept apart, the
checks of a vision image, and a `file-` id as a job's image."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

from flask.testing import FlaskClient

from service.deps import services
from tests.support import CORPUS, bearer
from visionq import retention
from visionq.state import keys

PNG = (CORPUS / "good" / "hopper.png").read_bytes()


def _upload(
    client: FlaskClient, data: bytes, purpose: str, tenant: str = "alice", name: str = "x"
) -> Any:
    return client.post(
        "/v1/files",
        data={"file": (io.BytesIO(data), name), "purpose": purpose},
        headers=bearer(tenant),
        content_type="multipart/form-data",
    )


def test_a_batch_file_goes_up_and_comes_back_byte_for_byte(client: FlaskClient) -> None:
    answer = _upload(client, b'{"a":1}\n{"b":2}\n', "batch", name="in.jsonl")
    assert answer.status_code == 200, answer.json
    made = answer.json
    assert made is not None
    assert (made["object"], made["purpose"], made["bytes"], made["filename"]) == (
        "file",
        "batch",
        16,
        "in.jsonl",
    )
    assert made["status"] == "processed" and made["expires_at"] > made["created_at"]
    content = client.get(f"/v1/files/{made['id']}/content", headers=bearer("alice"))
    assert content.data == b'{"a":1}\n{"b":2}\n'
    assert content.headers["Content-Length"] == "16"
    assert client.get(f"/v1/files/{made['id']}", headers=bearer("alice")).json == made


def test_another_tenants_file_is_unknown(client: FlaskClient) -> None:
    made = _upload(client, b"{}\n", "batch").json
    assert made is not None
    for path in (f"/v1/files/{made['id']}", f"/v1/files/{made['id']}/content"):
        answer = client.get(path, headers=bearer("bob"))
        assert answer.status_code == 404 and answer.json["error"]["type"] == "not_found"
    assert client.delete(f"/v1/files/{made['id']}", headers=bearer("bob")).status_code == 404
    listed = client.get("/v1/files", headers=bearer("bob")).json
    assert made["id"] not in {f["id"] for f in listed["data"]}


def test_files_list_newest_first_by_purpose_with_pages(client: FlaskClient) -> None:
    ids = [_upload(client, b"{}\n", "batch", tenant="bob").json["id"] for _ in range(3)]
    image = _upload(client, PNG, "vision", tenant="bob").json["id"]
    page = client.get("/v1/files?purpose=batch&limit=2", headers=bearer("bob")).json
    assert [f["id"] for f in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get(
        f"/v1/files?purpose=batch&after={page['last_id']}", headers=bearer("bob")
    ).json
    assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
    oldest = client.get("/v1/files?order=asc&limit=1", headers=bearer("bob")).json
    assert oldest["data"][0]["id"] == ids[0]
    assert image in {f["id"] for f in client.get("/v1/files", headers=bearer("bob")).json["data"]}


def test_a_vision_file_is_checked_from_its_bytes(client: FlaskClient) -> None:
    made = _upload(client, PNG, "vision").json
    assert (made["format"], made["width"], made["height"]) == ("png", 128, 128)
    not_image = _upload(client, b"plain text, not an image", "vision")
    assert not_image.status_code == 415 and not_image.json["error"]["param"] == "file"
    broken = _upload(client, (CORPUS / "bad" / "broken.png").read_bytes()[:60], "vision")
    assert broken.status_code == 422 and broken.json["error"]["type"] == "invalid_image"


def test_bad_uploads_say_which_field(client: FlaskClient) -> None:
    for purpose in ("batch_output", "fine-tune", ""):
        answer = _upload(client, b"{}\n", purpose)
        assert answer.status_code == 400 and answer.json["error"]["param"] == "purpose", purpose
    missing = client.post(
        "/v1/files",
        data={"purpose": "batch"},
        headers=bearer("alice"),
        content_type="multipart/form-data",
    )
    assert missing.status_code == 400 and missing.json["error"]["param"] == "file"


def test_a_file_id_is_an_image_url_and_is_counted_without_a_copy(client: FlaskClient) -> None:
    image = _upload(client, PNG, "vision").json["id"]
    body = {"prompt": "describe", "images": [image]}
    counted = client.post("/v1/tokens", json=body, headers=bearer("alice")).json
    assert counted["images"][0]["width"] == 128 and counted["image_tokens"] > 0
    job = client.post("/v1/jobs", json=body, headers=bearer("alice")).json
    assert job["images"][0]["source"] == "file" and job["images"][0]["file_id"] == image
    batch_file = _upload(client, b"{}\n", "batch").json["id"]
    for url, who in ((image, "bob"), (batch_file, "alice"), ("file-nope", "alice")):
        answer = client.post("/v1/jobs", json={"prompt": "x", "images": [url]}, headers=bearer(who))
        assert answer.status_code == 400, (url, who)
        assert (
            answer.json["error"]["param"] == "images[0]"
            or "image_url" in answer.json["error"]["param"]
        )


def test_a_deleted_or_expired_file_takes_its_bytes_unless_a_job_uses_them(
    client: FlaskClient,
) -> None:
    batch_file = _upload(client, b'{"x":1}\n', "batch").json["id"]
    image = _upload(client, PNG, "vision").json["id"]
    client.post("/v1/jobs", json={"prompt": "x", "images": [image]}, headers=bearer("alice"))
    deleted = client.delete(f"/v1/files/{image}", headers=bearer("alice"))
    assert deleted.json == {"id": image, "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{image}", headers=bearer("alice")).status_code == 404
    with client.application.app_context():
        svc = services()
        sha = hashlib.sha256(PNG).hexdigest()
        assert svc.store.has_image(sha)  # the job still uses it
        svc.redis.delete(keys.file(batch_file))  # as its TTL would
        removed = retention.remove_expired(svc.jobs, svc.store, now=time.time() + 10**9)
        assert batch_file in removed
        try:
            svc.store.open_body(batch_file)
        except FileNotFoundError:
            pass
        else:
            raise AssertionError("an expired file's bytes are still there")
