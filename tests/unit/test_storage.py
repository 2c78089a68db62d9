"""The file store: content-addressed writes are atomic for readers of the same image."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from visionq.storage import FileStore


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


def test_an_oversized_image_leaves_nothing_behind(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    try:
        store.put_image([b"x" * 600, b"y" * 600], max_bytes=1000)
    except Exception as exc:
        assert type(exc).__name__ == "PayloadTooLarge"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "images").rglob("*")) == []
