"""The image store's contract, on the file backend and on S3 (a real moto server process):
content addressing, limits, bodies, errors; and the file store's atomic rewrites."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.support.s3server import Backend, S3Server, s3_backend
from visionq.dev.ports import free_port
from visionq.errors import PayloadTooLarge, Unavailable
from visionq.storage import open_store
from visionq.storage.file import FileStore
from visionq.storage.s3 import S3Store


def test_images_are_stored_once_by_content(backend: Backend) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    chunks = [data[i : i + 1000_000] for i in range(0, len(data), 1000_000)]
    first = backend.store.put_image(chunks, max_bytes=len(data))
    again = backend.store.put_image([data], max_bytes=len(data))
    sha = hashlib.sha256(data).hexdigest()
    assert first.sha256 == again.sha256 == sha
    assert first.size == len(data)
    assert backend.stored() == [f"images/{sha[:2]}/{sha}"]
    assert backend.store.has_image(sha)
    with backend.store.open_image(sha) as fp:
        assert fp.read() == data
        # Pillow seeks; so does the prepare step, for the size.
        assert fp.seek(0, 2) == len(data)
        fp.seek(10)
        assert fp.read(5) == data[10:15]


def test_an_oversized_image_stores_nothing(backend: Backend) -> None:
    with pytest.raises(PayloadTooLarge):
        backend.store.put_image([b"x" * 600, b"y" * 600], max_bytes=1000)
    assert backend.stored() == []


def test_a_missing_image_is_file_not_found(backend: Backend) -> None:
    sha = "ab" * 32
    assert not backend.store.has_image(sha)
    with pytest.raises(FileNotFoundError):
        backend.store.open_image(sha)
    with pytest.raises(ValueError):
        backend.store.has_image("../../etc/passwd")


def test_deleting_an_image_is_idempotent(backend: Backend) -> None:
    sha = backend.store.put_image([b"to be deleted"], max_bytes=100).sha256
    backend.store.delete_image(sha)
    backend.store.delete_image(sha)
    assert not backend.store.has_image(sha)
    assert backend.stored() == []


def test_bodies_appear_whole_and_stream_back_with_their_length(backend: Backend) -> None:
    body = b'{"messages":[]}' * 1000

    def broken(out: BinaryIO) -> None:
        out.write(b'{"half')
        raise RuntimeError("the writer died")

    with pytest.raises(RuntimeError):
        backend.store.write_body("job_broken", broken)
    assert backend.stored() == []
    backend.store.write_body("job_1", lambda out: out.write(body))
    assert backend.stored() == ["bodies/job_1"]
    stream, length = backend.store.open_body("job_1")
    with stream:
        assert length == len(body)
        assert stream.read() == body
    backend.store.delete_body("job_1")
    backend.store.delete_body("job_1")
    with pytest.raises(FileNotFoundError):
        backend.store.open_body("job_1")
    with pytest.raises(ValueError):
        backend.store.write_body("../job_2", lambda out: None)


def test_threads_share_one_store(backend: Backend) -> None:
    blobs = [os.urandom(20_000) for _ in range(16)]
    shas: list[str] = []

    def put(data: bytes) -> None:
        shas.append(backend.store.put_image([data], max_bytes=len(data)).sha256)

    threads = [threading.Thread(target=put, args=(data,)) for data in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(shas) == sorted(hashlib.sha256(d).hexdigest() for d in blobs)
    for data in blobs:
        with backend.store.open_image(hashlib.sha256(data).hexdigest()) as fp:
            assert fp.read() == data


def test_ping_answers_when_the_store_is_usable(backend: Backend) -> None:
    backend.store.ping()


def test_the_s3_url_names_bucket_and_prefix(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = s3_backend(s3, monkeypatch, prefix="p")
    assert isinstance(backend.store, S3Store)
    bucket = backend.store.bucket
    store = open_store(f"s3://{bucket}/one/two/")
    sha = store.put_image([b"where am I"], max_bytes=100).sha256
    assert s3.keys(bucket) == [f"one/two/images/{sha[:2]}/{sha}"]
    bare = open_store(f"s3://{bucket}")
    assert bare.has_image(sha) is False
    bare.write_body("job_9", lambda out: out.write(b"{}"))
    assert "bodies/job_9" in s3.keys(bucket)


def test_an_object_already_stored_is_not_uploaded_again(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = s3_backend(s3, monkeypatch, prefix="p")
    assert isinstance(backend.store, S3Store)
    sha = backend.store.put_image([b"the image"], max_bytes=100).sha256
    key = f"p/images/{sha[:2]}/{sha}"
    # Marked behind the store's back: a second upload of the same sha would overwrite it.
    s3.client().put_object(Bucket=backend.store.bucket, Key=key, Body=b"marker")
    backend.store.put_image([b"the image"], max_bytes=100)
    with backend.store.open_image(sha) as fp:
        assert fp.read() == b"marker"


def test_s3_ping_names_a_missing_bucket_and_no_secret(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Unavailable) as missing:
        open_store("s3://no-such-bucket-here/x").ping()
    assert "no-such-bucket-here" in missing.value.message
    assert "does not exist" in missing.value.message
    _assert_no_secret(missing.value, s3)


def test_s3_unreachable_is_unavailable_without_secrets(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = open_store("s3://any-bucket")
    for action in (
        store.ping,
        lambda: store.put_image([b"x"], max_bytes=10),
        lambda: store.open_image("cd" * 32),
        lambda: store.open_body("job_1"),
    ):
        with pytest.raises(Unavailable) as down:
            action()
        assert down.value.status == 503
        assert down.value.retry_after
        _assert_no_secret(down.value, s3)


def test_an_s3_body_cut_off_while_it_streams_is_unavailable(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CutShort(http.server.BaseHTTPRequestHandler):
        """Answers every GET with the start of a 1 MB object, then hangs up."""

        def do_GET(self) -> None:
            self.send_response(206)
            self.send_header("Content-Length", str(1024 * 1024))
            self.send_header("Content-Range", f"bytes 0-{1024 * 1024 - 1}/{1024 * 1024}")
            self.end_headers()
            self.wfile.write(b'{"line": 1}\n' * 100)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        with open_store("s3://any-bucket").open_body_at("file-x", 0) as fp:
            assert fp.readline() == b'{"line": 1}\n'
            with pytest.raises(Unavailable) as cut:
                fp.read()
    finally:
        server.shutdown()
        server.server_close()
    assert cut.value.status == 503
    _assert_no_secret(cut.value, s3)


def _assert_no_secret(exc: Unavailable, s3: S3Server) -> None:
    shown = f"{exc.message} {exc.to_dict()} {exc!r}"
    assert s3.secret_key not in shown
    assert s3.access_key not in shown


def test_storing_the_same_bytes_again_never_shows_a_partial_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = os.urandom(3000)  # smaller than a write buffer: the case that once broke
    sha = store.put_image([data], max_bytes=10_000).sha256
    stop = threading.Event()
    seen: list[bytes] = []

    def write_again() -> None:
        while not stop.is_set():
            store.put_image([data], max_bytes=10_000)

    writer = threading.Thread(target=write_again)
    writer.start()
    try:
        for _ in range(3000):
            with store.open_image(sha) as fp:
                seen.append(fp.read())
    finally:
        stop.set()
        writer.join()
    assert all(content == data for content in seen)


def test_an_oversized_image_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(PayloadTooLarge):
        store.put_image([b"x" * 600, b"y" * 600], max_bytes=1000)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_body_is_read_from_an_offset_as_it_streams(backend: Backend) -> None:
    lines = b"".join(f'{{"line": {n}}}\n'.encode() for n in range(2000))
    backend.store.write_body("file-x", lambda out: out.write(lines))
    offset = lines.index(b'{"line": 1500}')
    with backend.store.open_body_at("file-x", offset) as fp:
        assert fp.readline() == b'{"line": 1500}\n'
        assert fp.read() == lines[offset + 15 :]
    with pytest.raises(FileNotFoundError):
        backend.store.open_body_at("file-missing", 0)
