"""Spools: an upload received once into the store and stored without a second copy, on the
file backend and on S3 (a real moto server process)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from tests.support.s3server import Backend, file_backend
from visionq.errors import PayloadTooLarge
from visionq.storage.spool import sha256_of


def _spooled(backend: Backend, data: bytes, *, max_bytes: int) -> object:
    spool = backend.store.spool(max_bytes=max_bytes)
    for i in range(0, len(data), 64 * 1024):
        spool.write(data[i : i + 64 * 1024])
    spool.seek(0)
    return spool


def test_a_spool_is_hashed_while_written_and_stored_once(backend: Backend) -> None:
    data = os.urandom(300 * 1024 + 5)
    spool = _spooled(backend, data, max_bytes=len(data))
    assert spool.read(8) == data[:8]  # readable, as the intake's header probe needs
    stored = backend.store.put_spool(spool)
    sha = hashlib.sha256(data).hexdigest()
    assert (stored.sha256, stored.size) == (sha, len(data))
    assert backend.stored() == [f"images/{sha[:2]}/{sha}"]
    with backend.store.open_image(sha) as fp:
        assert fp.read() == data
    spool.close()
    assert backend.stored() == [f"images/{sha[:2]}/{sha}"]


def test_an_oversized_spool_refuses_and_keeps_nothing(tmp_path: Path) -> None:
    backend = file_backend(tmp_path)
    spool = backend.store.spool(max_bytes=1000)
    spool.write(b"x" * 600)
    with pytest.raises(PayloadTooLarge):
        spool.write(b"y" * 600)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert backend.stored() == []


def test_a_closed_spool_leaves_no_temporary_file(tmp_path: Path) -> None:
    backend = file_backend(tmp_path)
    backend.store.spool(max_bytes=100).close()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_same_image_again_is_not_rewritten(tmp_path: Path) -> None:
    backend = file_backend(tmp_path)
    data = os.urandom(4096)
    first = _spooled(backend, data, max_bytes=len(data))
    sha = backend.store.put_spool(first).sha256
    path = tmp_path / "images" / sha[:2] / sha
    before = path.stat()
    again = _spooled(backend, data, max_bytes=len(data))
    assert backend.store.put_spool(again).sha256 == sha
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    first.close()
    again.close()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert backend.stored() == [f"images/{sha[:2]}/{sha}"]


def test_a_spool_is_stored_when_its_folders_are_gone(tmp_path: Path) -> None:
    backend = file_backend(tmp_path)
    backend.store.put_image([b"made the folders"], max_bytes=100)
    spool = backend.store.spool(max_bytes=100)
    spool.write(b"another image")
    for folder in sorted((tmp_path / "images").iterdir()):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    sha = backend.store.put_spool(spool).sha256
    spool.close()
    assert backend.stored() == [f"images/{sha[:2]}/{sha}"]


def test_a_spool_stored_twice_after_its_file_was_deleted_is_stored_again(
    backend: Backend,
) -> None:
    """Found in review: one upload named twice in a request, and a concurrent delete of
    the stored file between the two stores, made the second a 500 (the spool's temporary
    file had already become the stored one)."""
    data = os.urandom(70 * 1024)
    spool = _spooled(backend, data, max_bytes=len(data))
    sha = backend.store.put_spool(spool).sha256
    backend.store.delete_image(sha)
    assert backend.store.put_spool(spool).sha256 == sha
    with backend.store.open_image(sha) as fp:
        assert fp.read() == data
    spool.close()


def test_an_upload_is_stored_by_its_spool_or_else_copied(backend: Backend) -> None:
    """`put_upload` takes what the intake is handed: a spool of the store's own, stored
    without a copy, or any other file (a test's, the SDK's), read from its start."""
    data = os.urandom(70 * 1024)
    spool = _spooled(backend, data, max_bytes=len(data))
    sha = hashlib.sha256(data).hexdigest()
    assert sha256_of(spool) == sha  # the spool's own hash, nothing read again
    assert backend.store.put_upload(spool, max_bytes=len(data)).sha256 == sha
    spool.close()
    other = os.urandom(5000)
    plain = io.BytesIO(other)
    plain.seek(100)
    assert sha256_of(plain) == hashlib.sha256(other).hexdigest()
    assert plain.tell() == 0
    plain.seek(100)
    stored = backend.store.put_upload(plain, max_bytes=len(other))
    assert (stored.sha256, stored.size) == (hashlib.sha256(other).hexdigest(), len(other))
    with pytest.raises(PayloadTooLarge):
        backend.store.put_upload(io.BytesIO(other), max_bytes=len(other) - 1)


def test_a_spool_cannot_be_changed_behind_its_hash(tmp_path: Path) -> None:
    spool = file_backend(tmp_path).store.spool(max_bytes=100)
    spool.writelines([b"one ", b"two"])  # through `write`, so hashed and counted
    assert (spool.size, spool.sha256) == (7, hashlib.sha256(b"one two").hexdigest())
    with pytest.raises(io.UnsupportedOperation):
        spool.truncate(3)
    spool.close()
    assert spool.closed
