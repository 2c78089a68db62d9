"""A real S3-compatible server for tests: moto's standalone server as a child process.

Processes reach it the way a deployment reaches any S3: through the standard AWS
variables (`env()`), which boto3 reads itself; a test sets them in its own environment
with `monkeypatch` for the stores it makes itself. The secret key is made up per server, so a
test can look for it in logs and answers.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.processes import stop_process
from visionq.dev.ports import free_port, wait_for_http
from visionq.storage import BlobStore, open_store
from visionq.storage.file import FileStore


class S3Server:
    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_key = "AKIAVISIONQTEST"
        self.secret_key = "vq-s3-secret-" + secrets.token_hex(12)
        self._log_path = logs / "moto.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def env(self) -> dict[str, str]:
        """What a process needs to use this server, as a deployment would set it."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        with self._log_path.open("wb") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_http(f"{self.url}/moto-api/", self._popen, timeout=30)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"moto: {exc}\n{self._log_path.read_text()}") from None
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._popen is not None:
            stop_process(self._popen, grace=10)

    def client(self) -> Any:
        """The test's own client, for creating buckets and looking at what is stored: one
        per server, closed with it, so that no pooled socket is left for the garbage
        collector to find (pytest turns that ResourceWarning into an error)."""
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
            )
        return self._client

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextmanager
def running_s3(logs: Path) -> Iterator[S3Server]:
    server = S3Server(logs).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Backend:
    """A store under test and a listing of what it holds, as names relative to its root
    (`images/ab/<sha256>`, `bodies/<name>`), the same for every backend."""

    store: BlobStore
    stored: Callable[[], list[str]]


def file_backend(root: Path) -> Backend:
    store = FileStore(root)

    def stored() -> list[str]:
        return sorted(
            str(p.relative_to(store.root))
            for p in store.root.rglob("*")
            if p.is_file() and p.parent.name != "tmp"
        )

    return Backend(store, stored)


def s3_backend(server: S3Server, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Backend:
    """A store on a new bucket of `server`, reached through the AWS variables (set here
    with `monkeypatch`), as a deployment's processes reach theirs."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"vq-{secrets.token_hex(6)}"
    server.client().create_bucket(Bucket=bucket)
    store = open_store(f"s3://{bucket}/{prefix}")

    def stored() -> list[str]:
        return [key.removeprefix(f"{prefix}/") for key in server.keys(bucket)]

    return Backend(store, stored)
