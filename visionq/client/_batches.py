"""`client.files` and `client.batches`: the Files API and the Batch API (OpenAI's shapes,
API.md "Files and batches"), and the one thing a batch of images needs on top: turning a
folder of images into uploaded `vision` files and a JSONL input of one line per image.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from visionq.client._errors import ApiError, BatchNotEnded, BatchWaitTimeout, Unreachable
from visionq.client._multipart import MultipartBody
from visionq.client._types import (
    MAX_PAGE_SIZE,
    Batch,
    BatchPage,
    BatchResult,
    FileObject,
    FilePage,
)

if TYPE_CHECKING:
    from visionq.client._client import Client

#: The only endpoint a batch line may call (API.md).
ENDPOINT = "/v1/chat/completions"
#: What a folder is searched for (case does not matter); files named on their own are
#: taken whatever their name, and the API checks their bytes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})
#: How often `wait` looks at the batch by default: a batch's counts move line by line, and
#: one GET every 2 s per watcher is nothing to the API.
WAIT_INTERVAL = 2.0

#: A local file by path, or an open binary stream.
Upload = str | os.PathLike[str] | IO[bytes]
#: Where a download goes: a path (written whole, then renamed into place) or a stream.
Destination = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True)
class ImageLine:
    """One image of a batch of images: where it is, and the `custom_id` of its line."""

    path: Path
    custom_id: str


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def find_images(sources: Sequence[str | os.PathLike[str]]) -> list[ImageLine]:
    """The images `sources` name: a file as it is (custom_id: its name), a folder walked
    for files with an image suffix, hidden ones left out, in sorted order (custom_id: the
    path relative to the folder, with `/`).

    A path given twice is one line. When two different images would get the same
    custom_id (`a/x.jpg` and `b/x.jpg` named on their own), each of them is identified by
    its path as given instead, because custom_ids are unique in a batch.
    FileNotFoundError for a source that does not exist; ValueError when none is an image.
    """
    found: list[tuple[Path, str, str]] = []  # path, custom_id, the path as given
    for source in sources:
        root = Path(source)
        if root.is_dir():
            names = sorted(
                (p.relative_to(root) for p in root.rglob("*") if p.is_file()),
                key=lambda p: p.as_posix(),
            )
            for relative in names:
                if relative.suffix.lower() in IMAGE_SUFFIXES and not _hidden(relative):
                    found.append((root / relative, relative.as_posix(), str(root / relative)))
        elif root.is_file():
            found.append((root, root.name, str(source)))
        else:
            raise FileNotFoundError(f"no such file or folder: {source}")
    seen: set[Path] = set()
    unique = []
    for path, custom_id, given in found:
        if (resolved := path.resolve()) not in seen:
            seen.add(resolved)
            unique.append((path, custom_id, given))
    counts: dict[str, int] = {}
    for _, custom_id, _ in unique:
        counts[custom_id] = counts.get(custom_id, 0) + 1
    lines = [
        ImageLine(path, custom_id if counts[custom_id] == 1 else given)
        for path, custom_id, given in unique
    ]
    if not lines:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {list(sources)}")
    return lines


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def by_content(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """The paths grouped by the SHA-256 of their bytes, in the order first seen: each
    group is uploaded once."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(sha256_of(path), []).append(path)
    return groups


def image_line(
    custom_id: str,
    file_id: str,
    prompt: str,
    *,
    model: str | None = None,
    system: str | None = None,
    max_completion_tokens: int | None = None,
    upstream: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A batch input line asking `prompt` about the vision file `file_id`."""
    content = [
        {"type": "image_url", "image_url": {"url": file_id}},
        {"type": "text", "text": prompt},
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"messages": messages}
    if model:
        body["model"] = model
    if max_completion_tokens is not None:
        body["max_completion_tokens"] = max_completion_tokens
    body |= dict(upstream or {})
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def _quoted(item_id: str) -> str:
    return quote(item_id, safe="")


def _sized(stream: IO[bytes], stack: ExitStack) -> tuple[IO[bytes], int]:
    """The stream and the bytes left in it; a stream that cannot seek is first copied to
    a temporary file (closed with `stack`), since the upload needs its length."""
    if stream.seekable():
        here = stream.tell()
        size = stream.seek(0, os.SEEK_END) - here
        stream.seek(here)
        return stream, size
    spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by stack)
    shutil.copyfileobj(stream, spool)
    size = spool.tell()
    spool.seek(0)
    return spool, size


def _write_to(chunks: Iterator[bytes], destination: Destination) -> int:
    """Write `chunks` to `destination`; a path is written beside itself and renamed into
    place, so a failed download never leaves half a file under the name. Bytes written."""
    written = 0
    if not isinstance(destination, (str, os.PathLike)):
        for chunk in chunks:
            destination.write(chunk)
            written += len(chunk)
        destination.flush()
        return written
    target = Path(destination)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return written


class Files:
    """The Files API: `batch` inputs (JSONL), `vision` images (usable as `"url": "file-<id>"`
    in jobs and batch lines) and the `batch_output` files a batch writes."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        file: Upload,
        purpose: str,
        *,
        filename: str | None = None,
        on_read: Callable[[int, int], None] | None = None,
    ) -> FileObject:
        """Upload a path or binary stream, streamed (never whole in memory).

        `purpose` is `batch` or `vision`. `on_read(sent, size)` follows the upload's bytes.
        """
        with ExitStack() as opened:
            if isinstance(file, (str, os.PathLike)):
                path = Path(file)
                stream: IO[bytes] = opened.enter_context(path.open("rb"))
                name = filename or path.name
            else:
                stream = file
                own = getattr(file, "name", None)  # a temporary file's is a number
                name = filename or (Path(own).name if isinstance(own, str) else "upload")
            stream, size = _sized(stream, opened)
            kind = (
                "application/jsonl"
                if purpose == "batch"
                else mimetypes.guess_type(name)[0] or "application/octet-stream"
            )
            progress = None if on_read is None else (lambda sent: on_read(sent, size))
            body = MultipartBody(
                {"purpose": purpose}, "file", name, stream, size, kind, on_read=progress
            )
            return self._client._request(
                FileObject.from_dict,
                "POST",
                "/v1/files",
                data=body,
                headers={"Content-Type": body.content_type},
            )

    def get(self, file_id: str) -> FileObject:
        return self._client._request(FileObject.from_dict, "GET", f"/v1/files/{_quoted(file_id)}")

    def delete(self, file_id: str) -> None:
        """Remove the file; jobs and batches that use it keep what they need."""

        def deleted(answer: Mapping[str, Any]) -> None:
            if answer["deleted"] is not True:
                raise KeyError("deleted")

        self._client._request(deleted, "DELETE", f"/v1/files/{_quoted(file_id)}")

    def content(self, file_id: str) -> Iterator[bytes]:
        """The file's bytes in chunks as they arrive (ApiError at once for an unknown id)."""
        return self._client._stream(f"/v1/files/{_quoted(file_id)}/content")

    def download(self, file_id: str, destination: Destination) -> int:
        """Write the file's bytes to a path or stream; the number of bytes."""
        return _write_to(self.content(file_id), destination)

    def list_page(
        self, purpose: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> FilePage:
        """One page of the tenant's files; `after` is the last id of the previous page."""
        given = {"purpose": purpose, "limit": limit, "after": after}
        params = {k: v for k, v in given.items() if v is not None}
        return self._client._request(FilePage.from_dict, "GET", "/v1/files", params=params)

    def list(
        self, purpose: str | None = None, *, limit: int | None = None, page_size: int = 100
    ) -> Iterator[FileObject]:
        """The tenant's files, at most `limit` (None: all), fetched a page at a time as the
        iteration reaches it."""
        return _pages(
            lambda size, after: self.list_page(purpose, limit=size, after=after), limit, page_size
        )


class Batches:
    """The Batch API (OpenAI's shapes): create from a JSONL input or from images, follow,
    cancel, and read the results."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        input_file_id: str,
        *,
        endpoint: str = ENDPOINT,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        priority: str | None = None,
    ) -> Batch:
        """A batch of the uploaded JSONL `input_file_id`; `priority` `batch` (the default:
        behind interactive jobs) or `interactive`; a signed webhook when it ends."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if webhook_url:
            body["webhook"] = {"url": webhook_url}
        if priority:
            body["priority"] = priority
        return self._client._request(Batch.from_dict, "POST", "/v1/batches", json=body)

    def create_from_jsonl(
        self,
        file: Upload,
        *,
        on_upload: Callable[[int, int], None] | None = None,
        **options: Any,
    ) -> Batch:
        """Upload a JSONL input (purpose `batch`), then create its batch; `options` as for
        `create`, `on_upload(sent, size)` follows the upload's bytes."""
        uploaded = self._client.files.create(file, "batch", on_read=on_upload)
        return self.create(uploaded.id, **options)

    def create_from_images(
        self,
        sources: Sequence[str | os.PathLike[str]],
        prompt: str,
        *,
        model: str | None = None,
        system: str | None = None,
        max_completion_tokens: int | None = None,
        on_upload: Callable[[int, int], None] | None = None,
        metadata: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        priority: str | None = None,
        completion_window: str = "24h",
        **upstream: Any,
    ) -> Batch:
        """A batch asking `prompt` about each image of `sources` (files and folders, as
        `find_images` reads them), one line per image.

        Each distinct content is uploaded once as a `vision` file (two paths with the same
        bytes share one upload); `on_upload(done, total)` counts those uploads. An image
        the API refuses is an `ApiError` whose message starts with its path. Other
        keyword arguments (`temperature`, ...) go into every line's body.
        """
        images = find_images(sources)
        groups = by_content([image.path for image in images])
        file_ids: dict[Path, str] = {}
        if on_upload is not None:
            on_upload(0, len(groups))
        for done, paths in enumerate(groups.values(), start=1):
            try:
                uploaded = self._client.files.create(paths[0], "vision")
            except ApiError as exc:  # say which of thousands of images it was
                message = f"{paths[0]}: {exc.message}"
                raise ApiError(exc.status, exc.type, message, exc.param, exc.retry_after) from exc
            file_ids |= dict.fromkeys(paths, uploaded.id)
            if on_upload is not None:
                on_upload(done, len(groups))
        with tempfile.TemporaryFile() as jsonl:
            for image in images:
                line = image_line(
                    image.custom_id,
                    file_ids[image.path],
                    prompt,
                    model=model,
                    system=system,
                    max_completion_tokens=max_completion_tokens,
                    upstream=upstream,
                )
                jsonl.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
            jsonl.seek(0)
            uploaded = self._client.files.create(jsonl, "batch", filename="images.jsonl")
        return self.create(
            uploaded.id,
            completion_window=completion_window,
            metadata=metadata,
            webhook_url=webhook_url,
            priority=priority,
        )

    def get(self, batch_id: str) -> Batch:
        return self._client._request(Batch.from_dict, "GET", f"/v1/batches/{_quoted(batch_id)}")

    def cancel(self, batch_id: str) -> Batch:
        """Ask the batch to stop: `cancelling`, then `cancelled` once the lines in flight
        have ended; finished lines stay in its output."""
        path = f"/v1/batches/{_quoted(batch_id)}/cancel"
        return self._client._request(Batch.from_dict, "POST", path)

    def wait(
        self,
        batch_id: str,
        *,
        on_progress: Callable[[Batch], None] | None = None,
        interval: float = WAIT_INTERVAL,
        timeout: float | None = None,
    ) -> Batch:
        """Look at the batch every `interval` seconds until it has ended (completed,
        failed, expired or cancelled); `on_progress(batch)` after each look.
        `BatchWaitTimeout` after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get(batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch.finished:
                return batch
            pause = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BatchWaitTimeout(timeout or 0.0, batch)
                pause = min(pause, left)
            time.sleep(pause)

    def _result_files(self, batch_id: str) -> list[str]:
        batch = self.get(batch_id)
        if not batch.finished:
            raise BatchNotEnded(batch)
        return [f for f in (batch.output_file_id, batch.error_file_id) if f]

    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """Every line's result of an ended batch: the output file's lines (succeeded), then
        the error file's (failed, expired, cancelled), each in input order. Streamed.
        `BatchNotEnded` at once while the batch runs."""
        file_ids = self._result_files(batch_id)

        def lines() -> Iterator[BatchResult]:
            for file_id in file_ids:
                for raw in _lines(self._client.files.content(file_id)):
                    try:
                        yield BatchResult.from_dict(json.loads(raw))
                    except (ValueError, KeyError, TypeError, AttributeError) as exc:
                        raise Unreachable(
                            f"file {file_id} has a line that is not a result"
                        ) from exc

        return lines()

    def download_results(self, batch_id: str, destination: Destination) -> int:
        """Write the output file's lines, then the error file's, as they are (one JSONL of
        every line's result) to a path or stream; the number of lines."""
        file_ids = self._result_files(batch_id)
        counted = 0

        def chunks() -> Iterator[bytes]:
            nonlocal counted
            for file_id in file_ids:
                last = b"\n"
                for chunk in self._client.files.content(file_id):
                    counted += chunk.count(b"\n")
                    last = chunk[-1:] or last
                    yield chunk
                if last != b"\n":  # a file without its last newline: keep lines apart
                    counted += 1
                    yield b"\n"

        _write_to(chunks(), destination)
        return counted

    def list_page(self, *, limit: int | None = None, after: str | None = None) -> BatchPage:
        """One page of the tenant's batches, newest first; `after` is the last id of the
        previous page."""
        given = {"limit": limit, "after": after}
        params = {k: v for k, v in given.items() if v is not None}
        return self._client._request(BatchPage.from_dict, "GET", "/v1/batches", params=params)

    def list(self, *, limit: int | None = None, page_size: int = 100) -> Iterator[Batch]:
        """The tenant's batches, newest first, at most `limit` (None: all), fetched a page
        at a time as the iteration reaches it."""
        return _pages(lambda size, after: self.list_page(limit=size, after=after), limit, page_size)


def _pages(
    fetch: Callable[[int, str | None], FilePage | BatchPage], limit: int | None, page_size: int
) -> Iterator[Any]:
    """Items of OpenAI-style pages (`data`, `has_more`, next page `after` the last id)."""
    after = None
    count = 0
    while limit is None or count < limit:
        size = min(page_size, MAX_PAGE_SIZE)
        if limit is not None:
            size = min(size, limit - count)
        page = fetch(size, after)
        yield from page.data
        count += len(page.data)
        if not page.has_more or not page.data:
            return
        after = page.data[-1].id


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Non-empty lines of a byte stream, whatever its chunks' boundaries."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from (line for line in whole if line.strip())
    if rest.strip():
        yield rest
