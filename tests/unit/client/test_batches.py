"""The SDK's batch side that needs no visionq server: finding images in folders (real files
in tmp_path), deduplicating them by content, the lines it writes, and its HTTP exchange
against a small stand-in of the Files and Batch API (a real HTTP server, parsed by the
same werkzeug multipart parser the API uses), which records what arrives."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request

from tests.support.servers import serving, wsgi_server
from visionq.client import (
    ApiError,
    Batch,
    BatchNotEnded,
    BatchResult,
    BatchWaitTimeout,
    Client,
    find_images,
)
from visionq.client._batches import by_content, image_line


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_are_walked_for_images_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in ("b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.jpeg", "x.gif", "y.bmp"):
        _write(root / name, name.encode())
    for name in ("notes.txt", "raw.tif", ".hidden.jpg", ".cache/e.png", "sub/README"):
        _write(root / name, b"not taken")
    lines = find_images([root])
    assert [line.custom_id for line in lines] == [
        "a.JPG",
        "b.png",
        "sub/c.webp",
        "sub/deeper/d.jpeg",
        "x.gif",
        "y.bmp",
    ]
    assert lines[2].path == root / "sub" / "c.webp"


def test_files_named_alone_are_taken_by_name_and_clashing_names_by_path(tmp_path: Path) -> None:
    one = _write(tmp_path / "a" / "x.jpg", b"1")
    two = _write(tmp_path / "b" / "x.jpg", b"2")
    odd = _write(tmp_path / "scan.tiff", b"3")  # named on its own: taken, the API judges it
    lines = find_images([one, str(two), odd, tmp_path / "a" / ".." / "a" / "x.jpg"])
    assert [line.custom_id for line in lines] == [str(one), str(two), "scan.tiff"]
    folder = find_images([tmp_path / "a", tmp_path / "b"])  # both folders hold x.jpg
    assert [line.custom_id for line in folder] == [str(one), str(two)]


def test_no_images_or_a_missing_path_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "empty" / "notes.txt", b"x")
    with pytest.raises(ValueError, match="no images"):
        find_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images([tmp_path / "missing"])


def test_paths_with_the_same_bytes_are_one_group(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.png", b"same bytes")
    b = _write(tmp_path / "b.png", b"other bytes")
    c = _write(tmp_path / "copy" / "a.png", b"same bytes")
    groups = by_content([a, b, c])
    assert list(groups.values()) == [[a, c], [b]]
    assert len(next(iter(groups))) == 64


def test_an_image_line_is_an_openai_chat_request_on_the_file() -> None:
    line = image_line("x.jpg", "file-1", "describe", model="m", system="be brief")
    assert line == {
        "custom_id": "x.jpg",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "file-1"}},
                        {"type": "text", "text": "describe"},
                    ],
                },
            ],
        },
    }
    tuned = image_line("x", "file-1", "p", upstream={"temperature": 0.2})["body"]
    assert "model" not in tuned and tuned["temperature"] == 0.2


class StandIn:
    """What the stand-in API received, and the batch states it answers with in turn."""

    def __init__(self) -> None:
        self.uploads: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.contents: dict[str, bytes] = {}
        self.states: list[dict[str, Any]] = []
        self.app = Flask("stand-in")
        app = self.app

        @app.post("/v1/files")
        def upload() -> Any:
            part = request.files["file"]
            data = part.read()
            if data.startswith(b"II*"):
                error = {"type": "unsupported_media_type", "message": "tiff", "param": "file"}
                return jsonify({"error": error}), 415
            file_id = f"file-{len(self.uploads)}"
            self.contents[file_id] = data
            self.uploads.append(
                {
                    "purpose": request.form["purpose"],
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "data": data,
                    "length": request.headers.get("Content-Length"),
                    "chunked": request.headers.get("Transfer-Encoding"),
                }
            )
            return jsonify(_file(file_id, part.filename or "", request.form["purpose"], data))

        @app.get("/v1/files/<file_id>/content")
        def content(file_id: str) -> Any:
            data = self.contents[file_id]
            return Response(iter([data[:7], data[7:]]), mimetype="application/octet-stream")

        @app.post("/v1/batches")
        def create() -> Any:
            self.created.append(request.get_json())
            return jsonify(_batch("validating"))

        @app.get("/v1/batches/batch_1")
        def get() -> Any:
            return jsonify(self.states.pop(0) if len(self.states) > 1 else self.states[0])

        @app.get("/v1/batches")
        def listing() -> Any:
            after = request.args.get("after")
            limit = int(request.args["limit"])
            ids = [f"batch_{n}" for n in range(5, 0, -1)]
            start = ids.index(after) + 1 if after else 0
            page = ids[start : start + limit]
            return jsonify(
                {
                    "object": "list",
                    "data": [_batch("completed") | {"id": i} for i in page],
                    "has_more": start + limit < len(ids),
                }
            )


def _file(file_id: str, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": 1764000000,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": 1764600000,
    }


def _batch(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-9",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1764000000,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": None,
    } | fields


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, Client]]:
    api = StandIn()
    with serving(wsgi_server(api.app)) as url, Client(url, "k") as client:
        yield api, client


def test_each_content_is_uploaded_once_and_every_path_gets_its_line(
    tmp_path: Path, stand_in: tuple[StandIn, Client]
) -> None:
    api, client = stand_in
    _write(tmp_path / "imgs" / "a.png", b"\x89PNG same")
    _write(tmp_path / "imgs" / "b.jpg", b"\xff\xd8 other")
    _write(tmp_path / "imgs" / "copy" / "a.png", b"\x89PNG same")
    seen: list[tuple[int, int]] = []
    batch = client.batches.create_from_images(
        [tmp_path / "imgs"],
        "describe",
        model="mimo-v2.5",
        on_upload=lambda done, total: seen.append((done, total)),
        metadata={"run": "1"},
    )
    assert isinstance(batch, Batch) and batch.status == "validating"
    assert seen == [(0, 2), (1, 2), (2, 2)]
    images, jsonl = api.uploads[:2], api.uploads[2]
    assert [(u["purpose"], u["filename"], u["data"]) for u in images] == [
        ("vision", "a.png", b"\x89PNG same"),
        ("vision", "b.jpg", b"\xff\xd8 other"),
    ]
    assert images[0]["content_type"] == "image/png"
    # Streamed with its length announced, not chunked.
    assert all(u["length"] and not u["chunked"] for u in api.uploads)
    assert (jsonl["purpose"], jsonl["content_type"]) == ("batch", "application/jsonl")
    lines = [json.loads(line) for line in jsonl["data"].splitlines()]
    assert [(line["custom_id"], _image_url(line)) for line in lines] == [
        ("a.png", "file-0"),
        ("b.jpg", "file-1"),
        ("copy/a.png", "file-0"),
    ]
    assert {line["body"]["model"] for line in lines} == {"mimo-v2.5"}
    assert api.created == [
        {
            "input_file_id": "file-2",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"run": "1"},
        }
    ]


def test_a_refused_image_is_named_in_the_error(
    tmp_path: Path, stand_in: tuple[StandIn, Client]
) -> None:
    api, client = stand_in
    _write(tmp_path / "imgs" / "a.png", b"\x89PNG a")
    tiff = _write(tmp_path / "imgs" / "b.png", b"II*\x00 a tiff named png")
    with pytest.raises(ApiError) as refused:
        client.batches.create_from_images([tmp_path / "imgs"], "describe")
    assert (refused.value.status, refused.value.type) == (415, "unsupported_media_type")
    assert refused.value.message == f"{tiff}: tiff" and refused.value.param == "file"
    assert api.created == []


def _image_url(line: dict[str, Any]) -> str:
    url: str = line["body"]["messages"][-1]["content"][0]["image_url"]["url"]
    return url


def test_a_jsonl_stream_is_uploaded_whole_with_its_progress(
    stand_in: tuple[StandIn, Client],
) -> None:
    api, client = stand_in
    data = b"".join(
        json.dumps(image_line(f"n{n}", "file-x", "p")).encode() + b"\n" for n in range(3000)
    )
    sent: list[tuple[int, int]] = []
    client.batches.create_from_jsonl(
        io.BytesIO(data), on_upload=lambda done, size: sent.append((done, size))
    )
    assert api.uploads[0]["data"] == data and api.uploads[0]["filename"] == "upload"
    assert sent[-1] == (len(data), len(data)) and len(sent) > 1


def test_wait_reports_every_look_and_results_merge_output_then_errors(
    stand_in: tuple[StandIn, Client], tmp_path: Path
) -> None:
    api, client = stand_in
    ok = {
        "id": "batch_req_1",
        "custom_id": "a.png",
        "response": {
            "status_code": 200,
            "request_id": "job_1",
            "body": {"choices": [{"message": {"role": "assistant", "content": "a cat"}}]},
        },
        "error": None,
    }
    bad = {
        "id": "batch_req_2",
        "custom_id": "b.png",
        "response": None,
        "error": {"code": "invalid_image", "message": "not an image"},
    }
    api.contents["file-out"] = json.dumps(ok).encode() + b"\n"
    api.contents["file-err"] = json.dumps(bad).encode()  # no final newline
    counts = {"total": 2, "completed": 1, "failed": 1}
    api.states = [
        _batch("validating"),
        _batch("in_progress", request_counts=counts | {"completed": 0, "failed": 0}),
        _batch("completed", request_counts=counts, output_file_id="file-out")
        | {"error_file_id": "file-err"},
    ]
    looks: list[Batch] = []
    done = client.batches.wait("batch_1", on_progress=looks.append, interval=0.01)
    assert [b.status for b in looks] == ["validating", "in_progress", "completed"]
    assert done.finished and done.request_counts.done == 2 and done.reason is None
    results = list(client.batches.results("batch_1"))
    assert all(isinstance(r, BatchResult) for r in results)
    assert [(r.custom_id, r.ok, r.content) for r in results] == [
        ("a.png", True, "a cat"),
        ("b.png", False, None),
    ]
    assert results[1].error is not None and results[1].error.code == "invalid_image"
    target = tmp_path / "results.jsonl"
    assert client.batches.download_results("batch_1", target) == 2
    assert [json.loads(line) for line in target.read_text().splitlines()] == [ok, bad]
    assert not list(tmp_path.glob(".*partial"))


def test_results_before_the_end_and_a_wait_that_runs_out(
    stand_in: tuple[StandIn, Client],
) -> None:
    api, client = stand_in
    api.states = [_batch("in_progress", request_counts={"total": 5, "completed": 1, "failed": 0})]
    with pytest.raises(BatchNotEnded, match="batch_1 is in_progress"):
        client.batches.results("batch_1")
    with pytest.raises(BatchWaitTimeout) as timed_out:
        client.batches.wait("batch_1", interval=0.01, timeout=0.05)
    assert timed_out.value.batch.request_counts.total == 5


def test_batches_are_listed_across_pages_after_the_last_id(
    stand_in: tuple[StandIn, Client],
) -> None:
    _, client = stand_in
    assert [b.id for b in client.batches.list(page_size=2)] == [
        f"batch_{n}" for n in range(5, 0, -1)
    ]
    assert [b.id for b in client.batches.list(limit=3, page_size=2)] == [
        "batch_5",
        "batch_4",
        "batch_3",
    ]


def test_a_failed_or_stopped_batch_says_why() -> None:
    failed = Batch.from_dict(
        _batch(
            "failed",
            errors={
                "object": "list",
                "data": [
                    {"code": "duplicate_custom_id", "line": 3, "message": "x again", "param": None},
                    {"code": "invalid_url", "line": 4, "message": "wrong url", "param": "url"},
                ],
            },
        )
    )
    assert failed.reason == "duplicate_custom_id: line 3: x again (and 1 more)"
    counts = {"total": 10, "completed": 4, "failed": 1, "canceled": 5}
    cancelled = Batch.from_dict(_batch("cancelled", request_counts=counts, extra="new field"))
    assert cancelled.reason == "cancelled with 10 of 10 lines done"
    assert cancelled.raw["extra"] == "new field"
    expired = Batch.from_dict(_batch("expired", request_counts=counts | {"canceled": 0}))
    assert expired.reason == "the completion window (24h) ran out with 5 of 10 lines done"
