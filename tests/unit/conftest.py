"""Fixtures for the storage contract, shared by the storage and retention tests: each
such test runs once on the file backend and once on S3 (a real moto server process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3server import Backend, S3Server, file_backend, running_s3, s3_backend


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(params=["file", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    if request.param == "file":
        return file_backend(tmp_path)
    # A prefix of two levels: keys must be built under it, not beside it.
    return s3_backend(request.getfixturevalue("s3"), monkeypatch, prefix="tenant-a/imgs")
