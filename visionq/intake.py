"""Turning a validated request into stored images and a queued job record.

Only cheap checks happen here (the caller is answering an HTTP request within
milliseconds): sizes, the format sniffed from the first bytes, base64 well-formed, URL
syntax. All of them run before anything is stored, so a request refused for its third
image leaves nothing behind. Decoding is the worker's job.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from visionq import images
from visionq.errors import InvalidRequest, PayloadTooLarge, UrlRefused, VisionqError
from visionq.jobs import JobRecord, JobStore
from visionq.models import JobRequest, whole_number
from visionq.queues import prepare_message
from visionq.settings import Settings
from visionq.storage import ImageStore, Spool, read_chunks
from visionq.upstream import image_ref
from visionq.urlfetch import check_public, check_url_syntax

UPLOAD_PREFIX = "upload:"
#: Far above what fits MiMo's context at a useful size, and it bounds the worker's time.
MAX_IMAGES_PER_JOB = 64


@dataclass
class _Pending:
    """One image of the request, checked but not yet stored."""

    source: str
    param: str
    url: str | None = None
    data: bytes | None = None
    upload: BinaryIO | None = None
    info: images.ImageInfo | None = None


def normalise_messages(request: JobRequest, n_uploads: int) -> list[dict[str, Any]]:
    """The request as OpenAI messages, with uploads nobody referred to placed before the text."""
    if request.messages is not None:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
    else:
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": url}} for url in request.images or []
        ]
        if request.prompt is not None:
            parts.append({"type": "text", "text": request.prompt})
        messages = [{"role": "user", "content": parts}]
        if request.system is not None:
            messages.insert(0, {"role": "system", "content": request.system})
    referred = {
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    }
    unreferred = [
        {"type": "image_url", "image_url": {"url": f"{UPLOAD_PREFIX}{n}"}}
        for n in range(n_uploads)
        if f"{UPLOAD_PREFIX}{n}" not in referred
    ]
    if unreferred:
        _place_before_text(messages, unreferred)
    return messages


def _place_before_text(messages: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        messages.append({"role": "user", "content": parts})
        return
    last = users[-1]
    content = last["content"]
    if isinstance(content, str):
        last["content"] = [*parts, {"type": "text", "text": content}]
        return
    first_text = next((i for i, p in enumerate(content) if p["type"] == "text"), len(content))
    content[first_text:first_text] = parts


class Intake:
    def __init__(self, settings: Settings, store: ImageStore, jobs: JobStore) -> None:
        self._settings = settings
        self._store = store
        self._jobs = jobs

    def resolve_model(self, request: JobRequest) -> str:
        model = request.model or self._settings.default_model
        if model not in self._settings.model_context:
            known = ", ".join(sorted(self._settings.model_context))
            raise InvalidRequest(f"unknown model {model!r}; use one of {known}", param="model")
        return model

    def check_images(
        self, messages: list[dict[str, Any]], uploads: Sequence[BinaryIO]
    ) -> list[_Pending]:
        """Every image of the request checked cheaply, in order; nothing stored yet."""
        pending: list[_Pending] = []
        for m, message in enumerate(messages):
            if not isinstance(message["content"], list):
                continue
            for p, part in enumerate(message["content"]):
                if part["type"] != "image_url":
                    continue
                param = f"messages[{m}].content[{p}].image_url.url"
                pending.append(self._check_one(part["image_url"]["url"], param, uploads))
        if not pending:
            raise InvalidRequest("a job needs at least one image", param="images")
        if len(pending) > MAX_IMAGES_PER_JOB:
            raise InvalidRequest(f"a job takes at most {MAX_IMAGES_PER_JOB} images", param="images")
        return pending

    def _check_one(self, url: str, param: str, uploads: Sequence[BinaryIO]) -> _Pending:
        limit = self._settings.max_image_bytes
        if url.startswith(UPLOAD_PREFIX):
            index = whole_number(url[len(UPLOAD_PREFIX) :])
            if index is None or index >= len(uploads):
                raise InvalidRequest(f"{url!r} names no uploaded file", param=param)
            stream = uploads[index]
            info = self._probe(stream, param)
            stream.seek(0, 2)
            if stream.tell() > limit:
                raise PayloadTooLarge(
                    f"an uploaded image is over the {limit}-byte limit", param=param
                )
            stream.seek(0)
            return _Pending("upload", param, upload=stream, info=info)
        if url.startswith("data:"):
            data = images.decode_base64(images.parse_data_url(url, max_chars=limit))
            info = self._probe(io.BytesIO(data), param)
            return _Pending("data_url", param, data=data, info=info)
        try:
            check_url_syntax(url)
        except UrlRefused:
            raise InvalidRequest(
                "an image URL must be http(s)://, a data: URL, or upload:<n>", param=param
            ) from None
        if len(url) > 8192:
            raise InvalidRequest("an image URL is at most 8192 characters", param=param)
        return _Pending("url", param, url=url)

    def _probe(self, fp: BinaryIO, param: str) -> images.ImageInfo:
        """Format from the first bytes and size from the header: cheap, and it stops bombs."""
        try:
            return images.probe(fp, max_pixels=self._settings.max_image_pixels)
        except VisionqError as exc:
            exc.param = exc.param or param
            raise

    def _check_webhook(self, url: str) -> None:
        """A webhook is refused at submit, not found out hours later by a failed delivery."""
        if self._settings.webhook_secret is None:
            raise InvalidRequest(
                "this server signs no webhooks: VISIONQ_WEBHOOK_SECRET is not set",
                param="webhook.url",
            )
        try:
            check_public(url, allow_private=self._settings.allow_private_urls)
        except UrlRefused as exc:
            exc.param = "webhook.url"
            raise

    def _put(self, item: _Pending) -> str:
        """An upload received into the store's spool is stored by a rename, not copied."""
        if isinstance(item.upload, Spool):
            return self._store.put_spool(item.upload).sha256
        return self._put_copy(item)

    def _put_copy(self, item: _Pending) -> str:
        if item.upload is not None:
            item.upload.seek(0)
            chunks = read_chunks(item.upload)
        else:
            chunks = [item.data or b""]
        return self._store.put_image(chunks, max_bytes=self._settings.max_image_bytes).sha256

    def store(self, pending: list[_Pending]) -> list[dict[str, Any]]:
        """Store uploaded and inline images content-addressed; URLs are fetched by workers."""
        records = []
        for index, item in enumerate(pending):
            record: dict[str, Any] = {"index": index, "source": item.source}
            if item.url is not None:
                record["url"] = item.url
            else:
                record["blob"] = self._put(item)
            records.append(record)
        return records

    def _survive_deletes(self, pending: list[_Pending], records: list[dict[str, Any]]) -> None:
        """Same bytes, same file: a delete of another job may have removed ours meanwhile.

        Our job's reference is recorded by now, so a delete that starts later keeps the
        file; one already under way holds the blob's lock. Once it is released, we put
        back whatever it removed.
        """
        for item, record in zip(pending, records, strict=True):
            sha = record.get("blob")
            if sha is None:
                continue
            deadline = time.monotonic() + 15
            while self._jobs.blob_being_deleted(sha) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not self._store.has_image(sha):
                self._put_copy(item)

    def submit(
        self,
        request: JobRequest,
        *,
        tenant: str,
        uploads: Sequence[BinaryIO] = (),
        remember: tuple[str, str, int] | None = None,
        request_id: str | None = None,
    ) -> JobRecord:
        """Store the images and write the job with its prepare task's message, together."""
        model = self.resolve_model(request)
        messages = normalise_messages(request, len(uploads))
        pending = self.check_images(messages, uploads)
        webhook_url = request.webhook.url if request.webhook else None
        if webhook_url is not None:
            self._check_webhook(webhook_url)
        image_records = self.store(pending)
        counter = iter(range(len(pending)))
        for message in messages:
            if isinstance(message["content"], list):
                for part in message["content"]:
                    if part["type"] == "image_url":
                        part["image_url"] = {**part["image_url"], "url": image_ref(next(counter))}
        stored_request = {
            "messages": messages,
            "max_completion_tokens": request.max_completion_tokens,
            "sampling": request.sampling(),
            "resize": request.resize,
        }
        record = self._jobs.create(
            tenant=tenant,
            model=model,
            api=request.api,
            request=stored_request,
            images=image_records,
            webhook_url=webhook_url,
            metadata=request.metadata,
            remember=remember,
            request_id=request_id,
            message=prepare_message,
        )
        self._survive_deletes(pending, image_records)
        return record

    def count_tokens(
        self, request: JobRequest, *, uploads: Sequence[BinaryIO] = ()
    ) -> dict[str, Any]:
        """`POST /v1/tokens`: MiMo's count for each image from its header; nothing is stored."""
        self.resolve_model(request)
        pending = self.check_images(normalise_messages(request, len(uploads)), uploads)
        counted = []
        for index, item in enumerate(pending):
            if item.info is None:
                raise InvalidRequest(
                    "token counting needs the image bytes: send a data URL or an upload",
                    param=item.param,
                )
            counted.append(
                {
                    "index": index,
                    "format": item.info.format,
                    "width": item.info.width,
                    "height": item.info.height,
                    "image_tokens": item.info.tokens,
                }
            )
        return {"images": counted, "image_tokens": sum(i["image_tokens"] for i in counted)}
