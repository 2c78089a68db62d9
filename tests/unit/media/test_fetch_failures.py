"""Whose failure is it: the remote server's, or our own storage's (issue 14, defect 5)?

A URL's body is read while it is written into the store, so both can fail in one loop.
The server's failures (a deadline, a reset, a body cut short) must fail the job as
`invalid_image_url`, counted, at once; only our storage's (a full disk) are an outage,
handed back uncounted. Real servers on loopback (tests/support/brokenserver.py), a real full
filesystem (a 256 KiB tmpfs), real Redis, the real stores; nothing of visionq stood in for.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import CORPUS
from tests.support.brokenserver import BrokenImageServer
from tests.support.s3server import Backend, file_backend, s3_backend
from visionq import pipeline, responses
from visionq.dev.ports import free_port
from visionq.errors import InvalidImageUrl, Unavailable
from visionq.intake import Intake
from visionq.media.urlfetch import UrlFetcher
from visionq.models import JobRequest
from visionq.runtime import Runtime
from visionq.settings import Settings
from visionq.state.keys import job as job_key
from visionq.storage import BlobStore
from visionq.storage.file import FileStore

DEADLINE = 2.0
IMAGE = (CORPUS / "good" / "hopper.png").read_bytes()
#: What the server says, in our words, for each way it breaks off (tests/support/brokenserver.py).
BROKEN_OFF = [
    ("trickle", "timed out after 2 s"),
    ("short", "closed the connection before the whole image arrived"),
    ("reset", "reset the connection"),
]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem of 256 KiB: a write past it fails with ENOSPC, as on a full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture(params=["file", "s3"])
def full_backend(
    request: pytest.FixtureRequest, full_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    """A store whose spools are on the full disk: the file store's root, or the temporary
    folder the S3 store spools in."""
    if request.param == "file":
        return file_backend(full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(full_disk))
    return s3_backend(request.getfixturevalue("s3"), monkeypatch, prefix="full")


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenImageServer]:
    with BrokenImageServer(IMAGE, every=1.0) as server:
        yield server


@pytest.fixture
def fetcher() -> Iterator[UrlFetcher]:
    made = UrlFetcher(allow_private=True, timeout=DEADLINE, max_bytes=1 << 20)
    yield made
    made._session.close()


def _store_from(fetcher: UrlFetcher, store: BlobStore, url: str) -> object:
    return fetcher.fetch(url, lambda chunks: store.put_image(chunks, max_bytes=1 << 20))


# -- The store: the source's errors are the source's -------------------------------------------


def _failing_source() -> Iterator[bytes]:
    yield b"x" * 100_000
    raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


def test_a_source_failing_midway_is_its_own_error_not_a_storage_outage(
    backend: Backend,
) -> None:
    with pytest.raises(ConnectionResetError):
        backend.store.put_image(_failing_source(), max_bytes=1 << 20)
    assert backend.stored() == []


def test_a_full_disk_under_put_image_is_still_a_storage_outage(full_backend: Backend) -> None:
    with pytest.raises(Unavailable, match="No space left on device"):
        full_backend.store.put_image([os.urandom(400_000)], max_bytes=1 << 20)
    assert full_backend.stored() == []


def test_an_upload_spooled_onto_a_full_disk_is_a_storage_outage(full_backend: Backend) -> None:
    # Werkzeug writes an upload's parts into the spool itself, with no loop of ours around.
    spool = full_backend.store.spool(max_bytes=1 << 20)
    try:
        with pytest.raises(Unavailable, match="No space left on device"):
            for _ in range(16):
                spool.write(os.urandom(64 * 1024))
                spool.flush()
    finally:
        spool.close()


# -- The fetcher: the server's failures are the URL's -------------------------------------------


@pytest.mark.parametrize(("behaviour", "says"), BROKEN_OFF)
def test_a_body_the_server_breaks_off_is_an_invalid_url_not_an_outage(
    behaviour: str, says: str, tmp_path: Path, broken: BrokenImageServer, fetcher: UrlFetcher
) -> None:
    backend = file_backend(tmp_path)
    started = time.monotonic()
    with pytest.raises(InvalidImageUrl, match=says) as raised:
        _store_from(fetcher, backend.store, broken.url(behaviour))
    assert time.monotonic() - started < DEADLINE + 2.0
    assert "Error" not in raised.value.message  # our words, not a library's class name
    assert list((tmp_path / "tmp").iterdir()) == []  # the spool went with it
    assert backend.stored() == []


def test_our_full_disk_while_fetching_stays_an_outage(full_disk: Path, fetcher: UrlFetcher) -> None:
    with BrokenImageServer(os.urandom(600_000)) as server:
        with pytest.raises(Unavailable, match="No space left on device"):
            _store_from(fetcher, FileStore(full_disk), server.url("whole"))
        assert server.seen("whole") == 1


def test_our_missing_file_while_fetching_stays_file_not_found(
    broken: BrokenImageServer, fetcher: UrlFetcher
) -> None:
    def consume(chunks: Iterator[bytes]) -> None:
        for _ in chunks:
            raise FileNotFoundError(errno.ENOENT, "removed meanwhile")

    with pytest.raises(FileNotFoundError):
        fetcher.fetch(broken.url("whole"), consume)


# -- The prepare stage: failed at once, counted ------------------------------------------------


def _runtime(redis_url: str, storage: Path | str) -> Runtime:
    return Runtime.from_settings(
        Settings(
            redis_url=redis_url,
            storage_url=storage if isinstance(storage, str) else f"file://{storage}",
            allow_private_urls=True,
            url_fetch_timeout=DEADLINE,
        )
    )


def _submit(rt: Runtime, image: str | Path) -> str:
    uploads = [] if isinstance(image, str) else [io.BytesIO(image.read_bytes())]
    request = JobRequest(prompt="x", images=[image] if isinstance(image, str) else [])
    return (
        Intake(rt.settings, rt.store, rt.jobs, rt.broker, rt.files.records)
        .submit(request, tenant="t", uploads=uploads)
        .id
    )


def _state(rt: Runtime, job_id: str) -> list[bytes | None]:
    fields = ("status", "prepare_attempts", "lease_until")
    return rt.jobs._redis.hmget(job_key(job_id), fields)  # type: ignore[return-value]


@pytest.mark.parametrize(("behaviour", "says"), BROKEN_OFF)
def test_a_url_the_server_breaks_off_fails_its_job_on_the_first_try(
    behaviour: str,
    says: str,
    redis_url: str,
    redis_db: redis.Redis,
    tmp_path: Path,
    broken: BrokenImageServer,
) -> None:
    rt = _runtime(redis_url, tmp_path)
    job_id = _submit(rt, broken.url(behaviour))
    started = time.monotonic()
    assert pipeline.prepare(job_id, rt) is None
    took = time.monotonic() - started
    job = responses.job_object(rt.jobs.get(job_id, tenant="t"))
    error = job["error"] or {}
    assert (job["status"], error.get("type")) == ("failed", "invalid_image_url"), _state(rt, job_id)
    assert says in error["message"]
    assert took < DEADLINE + 2.0
    assert _state(rt, job_id)[1] == b"1"  # the one try was counted


def test_a_body_written_onto_a_full_disk_hands_the_job_back_uncounted(
    redis_url: str, redis_db: redis.Redis, full_disk: Path
) -> None:
    rt = _runtime(redis_url, full_disk)
    job_id = _submit(rt, CORPUS / "good" / "hopper.png")  # 30 KB: stored while there is room
    filler = full_disk / "filler"
    with filler.open("wb", buffering=0) as out, pytest.raises(OSError, match="No space"):
        while True:
            out.write(b"\0" * 4096)
            out.flush()
    started = time.monotonic()
    assert pipeline.prepare(job_id, rt) is None
    assert time.monotonic() - started < 5.0  # an outage holds no prepare process for long
    assert _state(rt, job_id) == [b"running", b"0", b"0"]  # our outage: not the job's fault
    filler.unlink()  # room again: the next try prepares it
    assert pipeline.prepare(job_id, rt) == "mimo-v2.5"


def _unreachable_s3(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Point the S3 store at `port` on loopback, with made-up credentials."""
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "AKIAVISIONQDOWN",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def test_our_storage_down_is_found_before_the_url_is_downloaded(
    redis_url: str,
    redis_db: redis.Redis,
    broken: BrokenImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # S3 unreachable: the image would be downloaded whole before its upload failed, on
    # every uncounted try for as long as the outage lasts.
    _unreachable_s3(monkeypatch, free_port())
    rt = _runtime(redis_url, "s3://vq-down/images")
    job_id = _submit(rt, broken.url("slow"))
    fetched = broken.seen("slow")
    started = time.monotonic()
    assert pipeline.prepare(job_id, rt) is None
    took = time.monotonic() - started
    assert _state(rt, job_id) == [b"running", b"0", b"0"]  # our outage: uncounted
    assert broken.seen("slow") == fetched, f"downloaded while storage was down ({took:.1f}s)"


def test_a_hung_s3_is_an_outage_within_seconds(
    redis_url: str,
    redis_db: redis.Redis,
    broken: BrokenImageServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A listener that never accepts: the kernel completes the connection, nothing answers.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as hung:
        _unreachable_s3(monkeypatch, hung.getsockname()[1])
        rt = _runtime(redis_url, "s3://vq-hung/images")
        job_id = _submit(rt, broken.url("whole"))  # a URL: submitting needs no storage
        started = time.monotonic()
        assert pipeline.prepare(job_id, rt) is None
        took = time.monotonic() - started
    assert _state(rt, job_id) == [b"running", b"0", b"0"]  # our outage: uncounted
    assert took < 15.0, f"held the prepare process {took:.1f}s"
